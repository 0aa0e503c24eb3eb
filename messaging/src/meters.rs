//! Every metric the consumer records for the worker it runs in (labelled `service`), named and
//! described once.

service_kit::metrics_catalog! {
    /// Messages settled, labelled `service` and `outcome` (acked, retried, dead_lettered, handed_back).
    counter MESSAGES = "worker_messages_total": Count, "Messages settled, by service and outcome: acked, retried, dead_lettered or handed_back";
    /// Age of an event when it is consumed, labelled `service`.
    histogram QUEUE_LAG = "worker_queue_lag_seconds": Seconds, "Age of an event when its worker took it, retries included";
    /// Connections to the broker made again, labelled `service`.
    counter BROKER_RECONNECTS = "worker_broker_reconnects_total": Count, "Times a worker connected to the broker again after losing it";
}
