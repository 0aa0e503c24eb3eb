//! Every metric the notifier records, named and described once (the consumer's own, shared
//! with the converter, are in `messaging::meters`).

service_kit::metrics_catalog! {
    /// E-mails handed to the mail server (or the outbox).
    counter EMAILS_SENT = "notifier_emails_sent_total": Count, "E-mails handed to the mail server or written to the outbox";
    /// E-mails not sent, labelled `reason` (unaddressable, refused, transient).
    counter EMAILS_FAILED = "notifier_emails_failed_total": Count, "E-mails not sent, by reason: unaddressable, refused (for good) or transient (retried)";
    /// Outcomes whose user was already told.
    /// Webhook messages made from outcomes, one per endpoint that asked for the type.
    counter WEBHOOKS_DUE = "notifier_webhooks_due_total": Count, "Webhook messages made from outcomes, one per endpoint that asked for the type";
    /// Webhook attempts, labelled `verdict` (delivered, gone, retry).
    counter WEBHOOK_ATTEMPTS = "notifier_webhook_attempts_total": Count, "Webhook delivery attempts, by verdict: delivered, gone (410) or retry";
    counter DUPLICATES_SKIPPED = "notifier_duplicates_skipped_total": Count, "Outcomes skipped because the user was already told";
}
