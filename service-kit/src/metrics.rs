//! The process-wide Prometheus recorder. `metrics` macros anywhere in the process record into
//! it; `/metrics` renders it.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Latency buckets (seconds) for request and job histograms: fine below 10 ms where gRPC
/// calls live, coarse up to the minutes a conversion can take.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0,
];

/// The handle to the global recorder, installing it on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(LATENCY_BUCKETS)
            .expect("latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed elsewhere; /metrics may be empty");
        }
        handle
    })
}

/// The text exposition of every metric recorded so far.
pub fn render() -> String {
    let handle = prometheus();
    // Without the exporter's own HTTP listener nothing else drains histogram buffers.
    handle.run_upkeep();
    handle.render()
}
