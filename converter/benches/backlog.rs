//! How fast a backlog drains, against raw ffmpeg on the same cores, as an operator would try
//! it: the five services as separate processes (`mp3converter serve ROLE`), a batch of uploads
//! queued through the gateway while no converter runs, then converters started and timed until
//! the last e-mail is out. Each run, interleaved so all four see the same machine:
//!
//! 1. raw `ffmpeg -i in.mp4 -vn -c:a libmp3lame -q:a 2 out.mp3` on local copies, as many at a
//!    time as the workers convert in all (`BENCH_CONCURRENCY`, default 2); then the same with
//!    the cover pass a default job makes after each (the converter's own arguments), so the
//!    system is compared with raw ffmpeg doing the same work too;
//! 2. the batch drained by one converter process running that many jobs at once;
//! 3. the batch drained by that many converter processes running one job each;
//! 4. a batch uploaded with `cover=none` drained as in 2: the work raw ffmpeg does in 1, so
//!    the system is compared with raw ffmpeg on the goal's own command too.
//!
//! The drain ratio is raw ffmpeg's time over the system's (1.0: as fast as raw ffmpeg). CPU per
//! job comes from `/proc`: the converters' children (ffmpeg, and ffprobe where it runs), the
//! converters themselves, storage, the notifier, the gateway and, on the real servers, the
//! MongoDB-wire server (a Python program, so a cost of this machine rather than of ours).
//!
//! ```text
//! cargo build --release --bins && cargo bench -p converter --bench backlog
//! ```
//! The real servers (MariaDB, RabbitMQ, SecantusDB) must be running (`scripts/services run`).
//! `BENCH_PARTS` picks `embedded`, `real` or `both` (default); `BENCH_RUNS` (default 3),
//! `BENCH_JOBS` (default 16), `BENCH_SECONDS` (the clip's length, default 60).

use clients::Owner;
use converter::cover;
use converter::description::Picture;
use proto::storage::v1 as pb;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use test_support::bench::{env_number, median, settle_disk};
use test_support::cluster::{Cluster, Parts, Role, User};
use test_support::process::{CpuTimes, MachineCpu, cpu_times, release_binary};
use test_support::{VideoSpec, free_port, generate_video};

fn main() -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(run())
}

/// One timed phase: its wall time, the CPU it cost per job, and how the machine was used.
#[derive(Debug, Default, Clone)]
struct Phase {
    seconds: f64,
    /// CPU seconds per job, by who spent them.
    cpu: Vec<(&'static str, f64)>,
    busy: f64,
    kernel: f64,
    /// Mean seconds per job in each stage (`converter_stage_seconds`), for drains.
    stages: Vec<(String, f64)>,
}

impl Phase {
    fn cpu_of(&self, who: &str) -> f64 {
        self.cpu
            .iter()
            .find(|(name, _)| *name == who)
            .map_or(f64::NAN, |(_, seconds)| *seconds)
    }
}

/// Raw ffmpeg on each of `inputs`, `parallel` at a time; with `cover_of` (the inputs' length),
/// each MP3 is followed by the cover pass a default job makes, with the converter's own
/// arguments, so the system is also compared with raw ffmpeg doing the same work.
async fn raw_ffmpeg(
    inputs: &[PathBuf],
    out_dir: &Path,
    parallel: usize,
    cover_of: Option<Duration>,
) -> Phase {
    settle_disk().expect("`sync` writes back the page cache");
    let (machine, own) = (MachineCpu::now(), cpu_times(std::process::id()));
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut lanes = Vec::new();
    for _ in 0..parallel {
        let (next, inputs, out_dir) = (next.clone(), inputs.to_vec(), out_dir.to_owned());
        lanes.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(input) = inputs.get(n) else { return };
                let status = tokio::process::Command::new("ffmpeg")
                    .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
                    .arg(input)
                    .args(["-vn", "-c:a", "libmp3lame", "-q:a", "2"])
                    .arg(out_dir.join(format!("raw-{n}.mp3")))
                    .status()
                    .await
                    .expect("ffmpeg runs");
                assert!(status.success(), "raw ffmpeg failed on {}", input.display());
                if let Some(duration) = cover_of {
                    let cover = out_dir.join(format!("raw-{n}.jpg"));
                    let args = cover::extraction_args(
                        Picture::Frames,
                        cover::seek_point(Some(duration)),
                        input,
                        &cover,
                    )
                    .expect("a video has a cover");
                    let status = tokio::process::Command::new("ffmpeg")
                        .args(["-nostdin", "-loglevel", "error", "-y"])
                        .args(args)
                        .status()
                        .await
                        .expect("ffmpeg runs");
                    assert!(status.success(), "the raw cover pass failed");
                }
            }
        }));
    }
    for lane in lanes {
        lane.await.expect("a raw lane finished");
    }
    let seconds = started.elapsed().as_secs_f64();
    let (machine_after, own_after) = (MachineCpu::now(), cpu_times(std::process::id()));
    let jobs = inputs.len() as f64;
    Phase {
        seconds,
        cpu: vec![("ffmpeg", (own_after - own).children / jobs)],
        busy: machine_after.busy_share_since(&machine),
        kernel: machine_after.kernel_share_since(&machine),
        stages: Vec::new(),
    }
}

/// The system's side of one benchmark: a cluster without converters, and the user who uploads.
struct System {
    cluster: Cluster,
    user: User,
    parts: Parts,
    batch: usize,
}

impl System {
    async fn start(parts: Parts) -> Self {
        let mut cluster = Cluster::configure(
            &release_binary("mp3converter"),
            parts,
            // Info logs per job are part of what runs in production; debug is not.
            &[("RUST_LOG", "info")],
        )
        .await;
        cluster
            .start_roles(&[Role::Auth, Role::Storage, Role::Gateway, Role::Notifier])
            .await;
        let user = cluster.user("backlog@example.com").await;
        Self {
            cluster,
            user,
            parts,
            batch: 0,
        }
    }

    /// E-mails sent so far: the notifier's last step for a job.
    fn mails(&self) -> usize {
        match self.parts {
            Parts::Real => self.cluster.smtp.mails().len(),
            Parts::Embedded => {
                std::fs::read_dir(self.cluster.data_dir().join("outbox")).map_or(0, |entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter(|entry| entry.path().extension().is_some_and(|ext| ext == "eml"))
                        .count()
                })
            }
        }
    }

    /// Uploads `jobs` copies of `video` through the gateway with the audio `options` (query
    /// parameters); they wait in the queue.
    async fn queue_batch(
        &mut self,
        video: &[u8],
        jobs: usize,
        options: &[(&str, &str)],
    ) -> Vec<String> {
        self.batch += 1;
        let mut ids = Vec::new();
        for n in 0..jobs {
            let response = test_support::rest::upload_with_options(
                &self.cluster.http,
                &self.cluster.gateway,
                &self.user.token,
                &format!("batch{}-clip{n}.mp4", self.batch),
                video.to_vec(),
                options,
                &[],
            )
            .await
            .expect("the upload request went through");
            assert_eq!(response.status(), 202, "upload refused");
            let body: serde_json::Value = response.json().await.expect("a JSON answer");
            ids.push(body["job_id"].as_str().expect("a job id").to_owned());
        }
        ids
    }

    /// Drains `jobs` uploaded with `options` with `processes` converters of `concurrency` each,
    /// timed from their start to the last job's e-mail.
    async fn drain(
        &mut self,
        video: &[u8],
        jobs: usize,
        options: &[(&str, &str)],
        (processes, concurrency): (usize, usize),
    ) -> Phase {
        let ids = self.queue_batch(video, jobs, options).await;
        let mails_before = self.mails();
        settle_disk().expect("`sync` writes back the page cache");
        let others = self.pids();
        let before: Vec<CpuTimes> = others.iter().map(|(_, pid)| cpu_times(*pid)).collect();
        let machine = MachineCpu::now();
        let started = Instant::now();
        let ops_ports: Vec<u16> = (0..processes).map(|_| free_port()).collect();
        let mut converters: Vec<tokio::process::Child> = ops_ports
            .iter()
            .map(|port| {
                self.cluster.spawn(
                    Role::Converter,
                    &[
                        ("OPS_LISTEN_ADDR", format!("127.0.0.1:{port}")),
                        ("CONCURRENCY", concurrency.to_string()),
                    ],
                )
            })
            .collect();
        let watched: Vec<(String, u32)> = converters
            .iter()
            .filter_map(tokio::process::Child::id)
            .enumerate()
            .map(|(n, pid)| (format!("converter{n}"), pid))
            .chain(others.iter().map(|(who, pid)| ((*who).to_owned(), *pid)))
            .collect();
        let profile = profile_start(&watched);
        let deadline = started + Duration::from_secs(600);
        while self.mails() < mails_before + jobs {
            for converter in &mut converters {
                if let Ok(Some(status)) = converter.try_wait() {
                    panic!(
                        "a converter exited ({status}):\n{}",
                        self.cluster.log(Role::Converter)
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "the backlog did not drain in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seconds = started.elapsed().as_secs_f64();
        let machine_after = MachineCpu::now();
        profile_stop(profile).await;
        let mut converter_cpu = CpuTimes::default();
        for converter in &converters {
            let times = cpu_times(converter.id().expect("running"));
            converter_cpu.own += times.own;
            converter_cpu.children += times.children;
        }
        let per_job = |seconds: f64| seconds / jobs as f64;
        let mut cpu = vec![
            ("converter children", per_job(converter_cpu.children)),
            ("converter", per_job(converter_cpu.own)),
        ];
        for ((who, pid), before) in others.iter().zip(&before) {
            cpu.push((who, per_job((cpu_times(*pid) - *before).own)));
        }
        let mut stages: Vec<(String, f64)> = Vec::new();
        for port in &ops_ports {
            let metrics = test_support::scrape(&format!("http://127.0.0.1:{port}/metrics")).await;
            for (stage, seconds) in
                test_support::series_by_label(&metrics, "converter_stage_seconds_sum")
            {
                match stages.iter_mut().find(|(known, _)| *known == stage) {
                    Some((_, sum)) => *sum += seconds / jobs as f64,
                    None => stages.push((stage, seconds / jobs as f64)),
                }
            }
        }
        for mut converter in converters {
            converter
                .start_kill()
                .expect("the converter can be stopped");
            let _ = converter.wait().await;
        }
        self.check_batch(&ids).await;
        assert_eq!(self.mails(), mails_before + jobs, "one e-mail per job");
        Phase {
            seconds,
            cpu,
            busy: machine_after.busy_share_since(&machine),
            kernel: machine_after.kernel_share_since(&machine),
            stages,
        }
    }

    /// The processes whose CPU the drain is charged with, besides the converters.
    fn pids(&self) -> Vec<(&'static str, u32)> {
        let mut pids = vec![
            ("storage", self.cluster.pid(Role::Storage)),
            ("notifier", self.cluster.pid(Role::Notifier)),
            ("gateway", self.cluster.pid(Role::Gateway)),
            ("auth", self.cluster.pid(Role::Auth)),
        ];
        if self.parts == Parts::Real {
            pids.push((
                "MongoDB-wire server",
                self.cluster.mongo.pid().expect("the server runs"),
            ));
            if let Some(pid) = process_named("beam.smp") {
                pids.push(("RabbitMQ (whole server)", pid));
            }
        }
        pids
    }

    /// Every job of the batch ended DONE with an MP3, and its owner was told once.
    async fn check_batch(&self, ids: &[String]) {
        let storage = self.cluster.storage();
        let deadline = Instant::now() + Duration::from_secs(30);
        for id in ids {
            loop {
                let job = storage
                    .job(id, &Owner::Any)
                    .await
                    .expect("the job is readable");
                assert_ne!(job.state(), pb::JobState::Failed, "{}", job.error_reason);
                if job.state() == pb::JobState::Done && job.notified {
                    assert!(!job.mp3_id.is_empty());
                    break;
                }
                assert!(Instant::now() < deadline, "job {id} did not end: {job:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// With `BENCH_PERF_DIR` set, `perf` watches each of `pids` (and its threads and children)
/// during the drain, into `drain-N-WHO.data` there: `perf record -F 499 -g` for `perf report`,
/// or the subcommand and options in `BENCH_PERF` (`stat -e page-faults,context-switches`).
fn profile_start(pids: &[(String, u32)]) -> Vec<tokio::process::Child> {
    let Some(dir) = std::env::var_os("BENCH_PERF_DIR").map(PathBuf::from) else {
        return Vec::new();
    };
    static DRAINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = DRAINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let options = std::env::var("BENCH_PERF").unwrap_or_else(|_| "record -q -F 499 -g".into());
    pids.iter()
        .map(|(who, pid)| {
            tokio::process::Command::new("perf")
                .args(options.split_whitespace())
                .arg("-o")
                .arg(dir.join(format!("drain-{n}-{}.data", who.replace(' ', "-"))))
                .args(["-p", &pid.to_string()])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("perf runs")
        })
        .collect()
}

async fn profile_stop(profile: Vec<tokio::process::Child>) {
    for mut perf in profile {
        let pid = perf.id().expect("perf runs").to_string();
        let _ = tokio::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .await;
        let _ = perf.wait().await;
    }
}

/// The first process whose command is `name` (RabbitMQ's Erlang VM, say).
fn process_named(name: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid = entry.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (comm.trim() == name).then_some(pid)
    })
}

fn parts_label(parts: Parts) -> &'static str {
    match parts {
        Parts::Embedded => "embedded defaults (local files, queue file, outbox, SQLite)",
        Parts::Real => "real servers (SecantusDB, RabbitMQ, MariaDB, SMTP capture)",
    }
}

async fn run() -> anyhow::Result<()> {
    let seconds = env_number("BENCH_SECONDS", 60);
    let jobs = env_number("BENCH_JOBS", 16);
    let runs = env_number("BENCH_RUNS", 3).max(1);
    let concurrency = env_number("BENCH_CONCURRENCY", 2).max(1);
    let parts = match std::env::var("BENCH_PARTS").as_deref() {
        Ok("embedded") => vec![Parts::Embedded],
        Ok("real") => vec![Parts::Real],
        _ => vec![Parts::Embedded, Parts::Real],
    };
    let dir = tempfile::tempdir()?;
    let clip = dir.path().join("clip.mp4");
    eprintln!("generating a {seconds} s 720p video...");
    generate_video(
        &clip,
        VideoSpec {
            seconds: seconds as f32,
            size: (1280, 720),
            fps: 25,
            ..VideoSpec::small(1.0)
        },
    )
    .await?;
    let video = std::fs::read(&clip)?;
    let inputs: Vec<PathBuf> = (0..jobs)
        .map(|n| {
            let copy = dir.path().join(format!("input-{n}.mp4"));
            std::fs::copy(&clip, &copy).map(|_| copy)
        })
        .collect::<Result<_, _>>()?;
    let video_mb = video.len() as f64 / 1e6;

    for parts in parts {
        eprintln!("starting the services on the {}...", parts_label(parts));
        let mut system = System::start(parts).await;
        let mut rows = Vec::new();
        for run in 1..=runs {
            eprintln!("run {run} of {runs}...");
            let raw = raw_ffmpeg(&inputs, dir.path(), concurrency, None).await;
            let clip_length = Some(Duration::from_secs(seconds as u64));
            let same_work = raw_ffmpeg(&inputs, dir.path(), concurrency, clip_length).await;
            let one = system.drain(&video, jobs, &[], (1, concurrency)).await;
            let many = system.drain(&video, jobs, &[], (concurrency, 1)).await;
            let without_cover = system
                .drain(&video, jobs, &[("cover", "none")], (1, concurrency))
                .await;
            rows.push(Row {
                raw,
                same_work,
                one,
                many,
                without_cover,
            });
        }
        print_tables(parts, &rows, jobs, concurrency, seconds, video_mb);
    }
    Ok(())
}

/// One run's phases.
struct Row {
    /// Raw ffmpeg making the MP3s only, as the goal is stated.
    raw: Phase,
    /// Raw ffmpeg making the MP3s and the covers a default job makes.
    same_work: Phase,
    one: Phase,
    many: Phase,
    /// One converter draining jobs uploaded with `cover=none`: the work raw ffmpeg does.
    without_cover: Phase,
}

fn print_tables(
    parts: Parts,
    rows: &[Row],
    jobs: usize,
    concurrency: usize,
    seconds: usize,
    video_mb: f64,
) {
    println!();
    println!(
        "backlog of {jobs} jobs ({seconds} s 1280x720 H.264/AAC, {video_mb:.1} MB each) on the {}; \
         {} cores",
        parts_label(parts),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| run | raw ffmpeg ×{concurrency} (s) | raw + cover (s) | 1 converter ×{concurrency} (s) | \
         ratio | same-work ratio | {concurrency} converters ×1 (s) | ratio | same-work ratio | \
         1 converter ×{concurrency}, `cover=none` (s) | same-work ratio |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut ratios: [Vec<f64>; 5] = Default::default();
    for (n, row) in rows.iter().enumerate() {
        let these = [
            row.raw.seconds / row.one.seconds,
            row.same_work.seconds / row.one.seconds,
            row.raw.seconds / row.many.seconds,
            row.same_work.seconds / row.many.seconds,
            row.raw.seconds / row.without_cover.seconds,
        ];
        for (all, this) in ratios.iter_mut().zip(these) {
            all.push(this);
        }
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            n + 1,
            row.raw.seconds,
            row.same_work.seconds,
            row.one.seconds,
            these[0],
            these[1],
            row.many.seconds,
            these[2],
            these[3],
            row.without_cover.seconds,
            these[4]
        );
    }
    println!(
        "| median | | | | **{:.2}** | {:.2} | | **{:.2}** | {:.2} | | {:.2} |",
        median(&ratios[0]),
        median(&ratios[1]),
        median(&ratios[2]),
        median(&ratios[3]),
        median(&ratios[4])
    );
    println!(
        "(ratio: raw ffmpeg's time over the drain's, goal ≥ 0.9; same-work ratio: over the \
         drain's, the time of raw ffmpeg doing the drained jobs' work: the MP3 and the cover \
         (the converter's own arguments) for default jobs, the MP3 alone for `cover=none`)"
    );
    println!();
    println!("CPU seconds per job (median of the runs) and how the machine was used");
    let who: Vec<&str> = rows[0].one.cpu.iter().map(|(name, _)| *name).collect();
    println!(
        "| who | raw ffmpeg | raw + cover | 1 converter ×{concurrency} | \
         {concurrency} converters ×1 | 1 converter ×{concurrency}, `cover=none` |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let column = |pick: fn(&Row) -> &Phase, who: &str| {
        median(
            &rows
                .iter()
                .map(|row| pick(row).cpu_of(who))
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "| ffmpeg (raw) | {:.3} | {:.3} | | | |",
        column(|row| &row.raw, "ffmpeg"),
        column(|row| &row.same_work, "ffmpeg")
    );
    for name in &who {
        println!(
            "| {name} | | | {:.3} | {:.3} | {:.3} |",
            column(|row| &row.one, name),
            column(|row| &row.many, name),
            column(|row| &row.without_cover, name)
        );
    }
    let total = |pick: fn(&Row) -> &Phase, skip: &[&str]| {
        median(
            &rows
                .iter()
                .map(|row| {
                    pick(row)
                        .cpu
                        .iter()
                        .filter(|(name, _)| !skip.contains(name))
                        .map(|(_, seconds)| seconds)
                        .sum::<f64>()
                })
                .collect::<Vec<_>>(),
        )
    };
    let servers = ["MongoDB-wire server", "RabbitMQ (whole server)"];
    println!(
        "| **total** (without the MongoDB-wire server and RabbitMQ) | {:.3} | {:.3} | {:.3} | \
         {:.3} | {:.3} |",
        total(|row| &row.raw, &servers),
        total(|row| &row.same_work, &servers),
        total(|row| &row.one, &servers),
        total(|row| &row.many, &servers),
        total(|row| &row.without_cover, &servers)
    );
    let share = |pick: fn(&Row) -> &Phase, busy: bool| {
        median(
            &rows
                .iter()
                .map(|row| {
                    let phase = pick(row);
                    if busy { phase.busy } else { phase.kernel }
                })
                .collect::<Vec<_>>(),
        ) * 100.0
    };
    println!(
        "| machine busy (% of all cores) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        share(|row| &row.raw, true),
        share(|row| &row.same_work, true),
        share(|row| &row.one, true),
        share(|row| &row.many, true),
        share(|row| &row.without_cover, true)
    );
    println!(
        "| kernel's share of the busy time (%) | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        share(|row| &row.raw, false),
        share(|row| &row.same_work, false),
        share(|row| &row.one, false),
        share(|row| &row.many, false),
        share(|row| &row.without_cover, false)
    );
    println!();
    println!(
        "where a job's time goes in the drains (converter_stage_seconds, mean per job, median of the runs)"
    );
    println!(
        "| stage | 1 converter ×{concurrency} | {concurrency} converters ×1 | \
         1 converter ×{concurrency}, `cover=none` |"
    );
    println!("|---|---:|---:|---:|");
    let stage_of = |phase: &Phase, stage: &str| {
        phase
            .stages
            .iter()
            .find(|(name, _)| name == stage)
            .map_or(f64::NAN, |(_, seconds)| *seconds)
    };
    let mut names: Vec<&str> = rows[0]
        .one
        .stages
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    let order = ["claim", "fetch", "wait", "convert", "store", "finish"];
    names.sort_by_key(|name| order.iter().position(|known| known == name));
    for stage in names {
        let column = |pick: fn(&Row) -> &Phase| {
            median(
                &rows
                    .iter()
                    .map(|row| stage_of(pick(row), stage))
                    .collect::<Vec<_>>(),
            )
        };
        println!(
            "| {stage} | {:.3} | {:.3} | {:.3} |",
            column(|row| &row.one),
            column(|row| &row.many),
            column(|row| &row.without_cover)
        );
    }
}
