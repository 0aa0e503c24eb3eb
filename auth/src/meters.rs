//! Every metric the auth service records, named and described once.

service_kit::metrics_catalog! {
    /// Logins, labelled `outcome` (ok, failed, throttled).
    counter LOGINS = "auth_logins_total": Count, "Logins, by outcome: ok, failed (wrong or unknown credentials) or throttled";
    /// Token validations, labelled `outcome` (ok, invalid).
    counter VALIDATIONS = "auth_validations_total": Count, "Token validations, by outcome: ok or invalid";
    /// Accounts created.
    counter REGISTRATIONS = "auth_registrations_total": Count, "Accounts created";
    /// Time per call, labelled `method` (Register, Login, Validate).
    histogram RPC_DURATION = "auth_rpc_duration_seconds": Seconds, "Time to answer a call, by method";
}
