//! Smoke tests proving each real server the suite depends on answers, through the same helpers
//! every other test uses: MariaDB, RabbitMQ, the MongoDB-wire server, the SMTP capture, and
//! ffmpeg/ffprobe.

use futures::{AsyncReadExt, AsyncWriteExt};
use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use sea_orm::{ConnectionTrait, Database, Statement};
use std::time::Duration;
use test_support::{
    SmtpCapture, TestBroker, TestMongo, TestMysql, VideoSpec, ffprobe_duration_seconds,
    generate_video, media::ffprobe_codecs, temp_dir,
};

#[tokio::test]
async fn mariadb_gives_each_test_a_fresh_database_that_is_dropped_afterwards() {
    let first = TestMysql::create().await.unwrap();
    let second = TestMysql::create().await.unwrap();
    assert_ne!(first.name(), second.name());

    let db = Database::connect(first.url()).await.unwrap();
    db.execute_unprepared("CREATE TABLE probe (id INT PRIMARY KEY, note VARCHAR(32))")
        .await
        .unwrap();
    db.execute_unprepared("INSERT INTO probe VALUES (1, 'hello')")
        .await
        .unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT note FROM probe WHERE id = 1",
        ))
        .await
        .unwrap()
        .expect("the row just inserted");
    assert_eq!(row.try_get::<String>("", "note").unwrap(), "hello");
    db.close().await.unwrap();

    let name = first.name().to_owned();
    drop(first);
    let server = Database::connect(second.url()).await.unwrap();
    let remaining = server
        .query_one_raw(Statement::from_string(
            server.get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{name}'"
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        remaining.try_get::<i64>("", "n").unwrap(),
        0,
        "dropped on Drop"
    );
}

#[tokio::test]
async fn rabbitmq_confirms_and_delivers_a_persistent_message_on_a_prefixed_queue() {
    let broker = TestBroker::create().await.unwrap();
    let queue = broker.queue("video");
    assert!(queue.starts_with(broker.prefix()) && queue.ends_with("video"));

    let connection = broker.connect().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            queue.clone().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.clone().into(),
            BasicPublishOptions::default(),
            b"smoke",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker confirms the publish");

    let message = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .unwrap()
        .expect("the message is on the queue");
    assert_eq!(message.delivery.data, b"smoke");
    message
        .delivery
        .ack(BasicAckOptions::default())
        .await
        .unwrap();
    connection.close(200, "ok".into()).await.unwrap();
}

#[tokio::test]
async fn mongodb_wire_server_streams_a_gridfs_file_in_and_out() {
    let mongo = TestMongo::create().await.unwrap();
    let bucket = mongo.database().gridfs_bucket(None);
    let content: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();

    let mut upload = bucket.open_upload_stream("smoke.bin").await.unwrap();
    for chunk in content.chunks(64 * 1024) {
        upload.write_all(chunk).await.unwrap();
    }
    upload.close().await.unwrap();
    let id = upload.id().clone();

    let mut download = bucket.open_download_stream(id).await.unwrap();
    let mut read_back = Vec::new();
    download.read_to_end(&mut read_back).await.unwrap();
    assert_eq!(read_back.len(), content.len());
    assert!(read_back == content, "GridFS returns the bytes it stored");
}

#[tokio::test]
async fn smtp_capture_receives_a_message_sent_with_lettre() {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let smtp = SmtpCapture::start().unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(smtp.addr().port())
        .build();
    let message = Message::builder()
        .from("mp3converter <noreply@example.com>".parse().unwrap())
        .to("user@example.com".parse().unwrap())
        .subject("Your MP3 is ready")
        .body(String::from("Download it now."))
        .unwrap();
    transport.send(message).await.unwrap();

    let mails = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["user@example.com"]);
    assert!(mails[0].text().contains("Subject: Your MP3 is ready"));
    assert!(mails[0].text().contains("Download it now."));
}

#[tokio::test]
async fn ffmpeg_generates_videos_that_ffprobe_reads() {
    let dir = temp_dir();
    let with_audio = dir.path().join("with-audio.mp4");
    generate_video(&with_audio, VideoSpec::small(2.0))
        .await
        .unwrap();
    let duration = ffprobe_duration_seconds(&with_audio).await.unwrap();
    assert!((duration - 2.0).abs() < 0.2, "duration was {duration}");
    assert_eq!(ffprobe_codecs(&with_audio).await.unwrap(), ["h264", "aac"]);

    let silent = dir.path().join("silent.mp4");
    generate_video(&silent, VideoSpec::small(1.0).without_audio())
        .await
        .unwrap();
    assert_eq!(ffprobe_codecs(&silent).await.unwrap(), ["h264"]);
}
