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

/// Declares a service's metrics in one place: a constant for each name, an `ALL` list of
/// them (so a test can hold the README to exactly these), and a `describe()` that registers each
/// one's unit and description with the recorder, so `/metrics` explains every series it shows.
///
/// ```ignore
/// service_kit::metrics_catalog! {
///     /// Logins, by outcome.
///     counter LOGINS = "auth_logins_total": Count, "Logins by outcome (ok, failed, throttled)";
/// }
/// ```
#[macro_export]
macro_rules! metrics_catalog {
    ($( $(#[$doc:meta])* $kind:ident $name:ident = $value:literal : $unit:ident, $description:literal; )*) => {
        $( $(#[$doc])* pub const $name: &str = $value; )*

        /// Every metric this service records, by name.
        pub const ALL: &[&str] = &[$($value),*];

        /// Registers each metric's unit and description with the recorder (call at start-up).
        pub fn describe() {
            $crate::metrics::prometheus();
            $( $crate::metrics_catalog!(@describe $kind $value, $unit, $description); )*
        }
    };
    (@describe counter $value:literal, $unit:ident, $description:literal) => {
        ::metrics::describe_counter!($value, ::metrics::Unit::$unit, $description)
    };
    (@describe histogram $value:literal, $unit:ident, $description:literal) => {
        ::metrics::describe_histogram!($value, ::metrics::Unit::$unit, $description)
    };
    (@describe gauge $value:literal, $unit:ident, $description:literal) => {
        ::metrics::describe_gauge!($value, ::metrics::Unit::$unit, $description)
    };
}
