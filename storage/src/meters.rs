//! Every metric the storage service records, named and described once.

service_kit::metrics_catalog! {
    /// Bytes received, labelled `bucket`.
    counter BYTES_IN = "storage_bytes_in_total": Bytes, "Bytes of files received, by bucket";
    /// Bytes sent, labelled `bucket`.
    counter BYTES_OUT = "storage_bytes_out_total": Bytes, "Bytes of files sent, by bucket";
    /// Streams open now, labelled `direction` (upload, download, append).
    gauge ACTIVE_STREAMS = "storage_active_streams": Count, "File streams open now, by direction: upload, download, or append (to a resumable upload)";
    /// Uploads ended, labelled `bucket` and `outcome` (stored, refused).
    counter UPLOADS = "storage_uploads_total": Count, "Uploads that ended, by bucket and outcome: stored or refused";
    /// Appends to resumable uploads ended, labelled `outcome` (kept, broken, checksum_mismatch).
    counter UPLOAD_APPENDS = "storage_upload_appends_total": Count, "Appends to resumable uploads that ended, by outcome: kept, broken (what arrived before the break is kept unless checksummed) or checksum_mismatch";
    /// Unfinished resumable uploads removed by the sweeper.
    counter UPLOAD_SESSIONS_EXPIRED = "storage_upload_sessions_expired_total": Count, "Unfinished resumable uploads removed after UPLOAD_EXPIRY without an append";
    /// Completed resumable uploads hashed again from their stored bytes.
    counter UPLOAD_REHASHES = "storage_upload_rehashes_total": Count, "Resumable uploads whose SHA-256 was computed again from their stored bytes at completion, because the digest carried along their appends was lost (a restart, or appends taken by another replica)";
    /// Appends to resumable uploads on GridFS that read the partly filled last chunk back.
    counter UPLOAD_TAIL_READS = "storage_upload_tail_reads_total": Count, "Appends to resumable uploads on GridFS that read their partly filled last chunk back from the server (from the upload's record, or from the chunk an earlier version stored) and removed unkept chunks past it, because this replica did not leave it as it is (the first append after a restart, or another replica's or a refused append in between)";
    /// Appends to resumable uploads that started on the lease this replica kept.
    counter UPLOAD_APPENDS_ON_KEPT_LEASE = "storage_upload_appends_on_kept_lease_total": Count, "Appends to resumable uploads that started on the lease this replica kept since the upload's last append through it, without writing the upload's record first";
    /// Durable points of appends to resumable uploads, labelled `record` (with_bytes, after_bytes).
    counter UPLOAD_DURABLE_POINTS = "storage_upload_durable_points_total": Count, "Durable points of appends to resumable uploads, by how the upload's record was written: with_bytes (with the same command as the last bytes: GridFS on a server with bulkWrite) or after_bytes (a command of its own)";
    /// Jobs recorded.
    counter JOBS_CREATED = "storage_jobs_created_total": Count, "Conversion jobs recorded";
}
