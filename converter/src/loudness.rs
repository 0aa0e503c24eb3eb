//! Loudness normalisation in two passes, as ffmpeg's loudnorm filter is meant to be used: the
//! first pass measures the whole (trimmed) input, the second applies one linear gain computed
//! from that measurement, so the result lands on the target without the pumping of loudnorm's
//! one-pass dynamic mode. A clip too short or too quiet to measure (BS.1770 gates out
//! everything below -70 LUFS, and integrated loudness needs 3 s of 400 ms blocks) falls back to
//! the one-pass dynamic mode, which still keeps the true peak under the ceiling.

use audio_options::Loudness;
use serde::Deserialize;

/// Loudness range target, LU: loudnorm's default, wide enough that speech and music pass
/// through without the range being compressed.
const RANGE_LU: f64 = 11.0;

/// What the first pass measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measurement {
    integrated: f64,
    true_peak: f64,
    range: f64,
    threshold: f64,
    offset: f64,
}

#[derive(Debug, Deserialize)]
struct Report {
    input_i: String,
    input_tp: String,
    input_lra: String,
    input_thresh: String,
    target_offset: String,
}

/// The first pass's filter.
pub fn measuring_filter(target: Loudness) -> String {
    format!(
        "loudnorm=I={}:TP={}:LRA={RANGE_LU}:print_format=json",
        target.target_lufs, target.true_peak_dbtp
    )
}

/// The second pass's filter: linear with the measurement, dynamic without one.
pub fn applying_filter(target: Loudness, measured: Option<Measurement>) -> String {
    let base = format!(
        "loudnorm=I={}:TP={}:LRA={RANGE_LU}",
        target.target_lufs, target.true_peak_dbtp
    );
    match measured {
        Some(m) => format!(
            "{base}:measured_I={:.2}:measured_TP={:.2}:measured_LRA={:.2}:measured_thresh={:.2}:offset={:.2}:linear=true",
            m.integrated, m.true_peak, m.range, m.threshold, m.offset
        ),
        None => base,
    }
}

/// The measurement in loudnorm's JSON report, if it measured anything usable.
pub fn measurement(report: Option<&str>) -> Option<Measurement> {
    let text = report?;
    let json = &text[text.find('{')?..=text.rfind('}')?];
    let report: Report = serde_json::from_str(json).ok()?;
    let number = |text: &str| text.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let measured = Measurement {
        integrated: number(&report.input_i)?,
        true_peak: number(&report.input_tp)?,
        range: number(&report.input_lra)?,
        threshold: number(&report.input_thresh)?,
        offset: number(&report.target_offset)?,
    };
    // Below the absolute gate there was nothing to measure (silence, or a clip too short).
    (measured.integrated > -70.0).then_some(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = r#" 
{
	"input_i" : "-27.61",
	"input_tp" : "-12.08",
	"input_lra" : "0.10",
	"input_thresh" : "-37.61",
	"output_i" : "-16.00",
	"output_tp" : "-1.50",
	"output_lra" : "0.10",
	"output_thresh" : "-26.00",
	"normalization_type" : "dynamic",
	"target_offset" : "0.03"
}
"#;

    #[test]
    fn the_measurement_feeds_the_linear_second_pass() {
        let measured = measurement(Some(REPORT)).expect("measured");
        let filter = applying_filter(Loudness::default(), Some(measured));
        assert_eq!(
            filter,
            "loudnorm=I=-16:TP=-1.5:LRA=11:measured_I=-27.61:measured_TP=-12.08:measured_LRA=0.10:measured_thresh=-37.61:offset=0.03:linear=true"
        );
    }

    #[test]
    fn silence_a_clip_too_short_or_no_report_falls_back_to_the_dynamic_mode() {
        let silent = REPORT.replace("\"-27.61\"", "\"-inf\"");
        assert_eq!(measurement(Some(&silent)), None);
        let gated = REPORT.replace("\"-27.61\"", "\"-70.00\"");
        assert_eq!(measurement(Some(&gated)), None);
        assert_eq!(measurement(None), None);
        assert_eq!(measurement(Some("no json here")), None);
        assert_eq!(
            applying_filter(Loudness::default(), None),
            "loudnorm=I=-16:TP=-1.5:LRA=11"
        );
    }
}
