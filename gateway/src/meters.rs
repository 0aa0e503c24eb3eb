//! Every metric the gateway records, named and described once.

service_kit::metrics_catalog! {
    /// Requests answered, labelled `method`, `route` and `status`.
    counter HTTP_REQUESTS = "gateway_http_requests_total": Count, "HTTP requests answered, by method, route and status";
    /// Time per request, labelled `method` and `route`.
    histogram HTTP_REQUEST_DURATION = "gateway_http_request_duration_seconds": Seconds, "Time to answer an HTTP request, by method and route";
    /// Uploads accepted (stored, recorded and queued).
    counter UPLOADS_ACCEPTED = "gateway_uploads_accepted_total": Count, "Uploads accepted: stored, recorded and queued";
    /// Bytes of accepted uploads.
    counter UPLOAD_BYTES = "gateway_upload_bytes_total": Bytes, "Bytes of accepted uploads";
    /// Resumable (tus) uploads created.
    counter TUS_UPLOADS_CREATED = "gateway_tus_uploads_created_total": Count, "Resumable (tus) uploads created";
    /// Bytes received in tus bodies.
    counter TUS_BYTES = "gateway_tus_bytes_total": Bytes, "Bytes received in the bodies of resumable (tus) uploads, kept or not";
    /// Bytes of MP3 downloads started.
    counter DOWNLOAD_BYTES = "gateway_download_bytes_total": Bytes, "Bytes of MP3s sent (as answered; a client that leaves early takes fewer)";
}
