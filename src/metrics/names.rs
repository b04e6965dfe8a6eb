//! Every metric name and its description, in one place.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

// State gauges (expiry, stale, backend up, tickets, generation) are rendered from the snapshot
// at scrape time by `super::state`, not through the recorder.

/// Completed handshakes `{host, version, cipher, resumed}`.
pub const HANDSHAKES: &str = "tlsedge_handshakes_total";
/// Completed handshakes by key exchange group `{host, group}` (`none`: resumed without one).
pub const HANDSHAKE_GROUPS: &str = "tlsedge_handshake_key_exchanges_total";
/// Handshake duration from accept to completion `{host, version, resumed}`.
pub const HANDSHAKE_DURATION: &str = "tlsedge_handshake_duration_seconds";
/// Failed handshakes `{reason}`.
pub const HANDSHAKE_FAILURES: &str = "tlsedge_handshake_failures_total";
/// Client connections open now.
pub const CONNECTIONS_ACTIVE: &str = "tlsedge_connections_active";
/// Proxied connections `{host}`.
pub const CONNECTIONS: &str = "tlsedge_connections_total";
/// Proxied connections by how they ended `{host, outcome}`.
pub const CONNECTIONS_CLOSED: &str = "tlsedge_connections_closed_total";
/// Failed backend connects `{host, backend}`.
pub const BACKEND_CONNECT_ERRORS: &str = "tlsedge_backend_connect_errors_total";
/// Failed TLS handshakes with backends `{host, backend}`.
pub const BACKEND_TLS_ERRORS: &str = "tlsedge_backend_tls_errors_total";
/// Failed DNS lookups of backend names `{host, backend}`.
pub const RESOLVE_ERRORS: &str = "tlsedge_backend_resolve_errors_total";
/// Failed active health probes `{host, backend}`.
pub const HEALTH_CHECK_FAILURES: &str = "tlsedge_health_check_failures_total";
/// Backend transitions `{host, backend, state}` (`up`, `down`).
pub const BACKEND_STATE_CHANGES: &str = "tlsedge_backend_state_changes_total";
/// 1 when a backend is usable, 0 while in cooldown after a failure `{host, backend}`.
pub const BACKEND_UP: &str = "tlsedge_backend_up";
/// Plaintext bytes relayed `{host, direction}`.
pub const BYTES: &str = "tlsedge_bytes_total";
/// Certificate notAfter `{host, cert}`.
pub const CERT_EXPIRY: &str = "tlsedge_certificate_expiry_timestamp_seconds";
/// Configuration loads `{result}`.
pub const CONFIG_RELOADS: &str = "tlsedge_config_reloads_total";
/// Generation of the snapshot being served.
pub const CONFIG_GENERATION: &str = "tlsedge_config_generation";
/// Panics in any task since start (rendered from a process-wide count).
pub const PANICS: &str = "tlsedge_panics_total";
/// 1 while a host serves an older certificate than its files say `{host}`.
pub const HOST_CERT_STALE: &str = "tlsedge_host_certificate_stale";
/// Unix time of the last applied configuration load.
pub const CONFIG_LAST_SUCCESS: &str = "tlsedge_config_last_reload_success_timestamp_seconds";
/// 1 while the configuration files are what is served, 0 after a rejected reload until one
/// applies.
pub const CONFIG_LAST_OK: &str = "tlsedge_config_last_reload_successful";
/// Ticket keys loaded.
pub const TICKET_KEYS_LOADED: &str = "tlsedge_ticket_keys_loaded";
/// Presented tickets that did not resume `{reason}`.
pub const TICKET_REJECTIONS: &str = "tlsedge_ticket_rejections_total";
/// Age of the newest ticket key, from its creation time (the key file's, on every instance).
pub const TICKET_KEY_AGE: &str = "tlsedge_ticket_key_age_seconds";
/// Ticket keys still in their grace period: they decrypt but do not encrypt yet.
pub const TICKET_KEYS_STAGED: &str = "tlsedge_ticket_keys_staged";
/// The expected ticket key rotation period (`sessions.ticket_rotate_every`).
pub const TICKET_ROTATION_PERIOD: &str = "tlsedge_ticket_key_rotation_period_seconds";
/// Connections refused at their PROXY header `{reason}`.
pub const PROXY_PROTOCOL_ERRORS: &str = "tlsedge_proxy_protocol_errors_total";
/// HTTP requests `{host, route, method, code}`.
pub const HTTP_REQUESTS: &str = "tlsedge_http_requests_total";
/// HTTP request duration, to the response's last byte `{host, route}`.
pub const HTTP_REQUEST_DURATION: &str = "tlsedge_http_request_duration_seconds";
/// HTTP requests in flight.
pub const HTTP_REQUESTS_ACTIVE: &str = "tlsedge_http_requests_active";
/// Requests sent to backends by the backend's answer `{host, backend, code}`.
pub const HTTP_BACKEND_REQUESTS: &str = "tlsedge_http_backend_requests_total";
/// Requests for a host their connection does not serve (421) `{host}`.
pub const HTTP_MISDIRECTED: &str = "tlsedge_http_misdirected_total";
/// HTTP connections ended by a protocol error `{host, reason}`.
pub const HTTP_PROTOCOL_ERRORS: &str = "tlsedge_http_protocol_errors_total";
/// Requests on the redirect listeners `{result}`.
pub const HTTP_REDIRECTS: &str = "tlsedge_http_redirects_total";
/// ACME orders by result `{host, result}` (`issued`, or why one failed).
pub const ACME_ORDERS: &str = "tlsedge_acme_orders_total";
/// When a host's certificates are next renewed (or ordered again) `{host}`.
pub const ACME_NEXT_RENEWAL: &str = "tlsedge_acme_next_renewal_timestamp_seconds";
/// When a host's last ACME order failed `{host}`.
pub const ACME_LAST_ERROR: &str = "tlsedge_acme_last_error_timestamp_seconds";
/// ACME challenge validations answered `{challenge}`.
pub const ACME_CHALLENGES: &str = "tlsedge_acme_challenges_answered_total";
/// Failed accept() calls.
pub const ACCEPT_ERRORS: &str = "tlsedge_accept_errors_total";

/// Operations that failed for a local reason `{during, cause}` (`during`: backend_connect,
/// health_check; `cause`: emfile, enfile, enobufs, enomem, eaddrnotavail).
pub const LOCAL_ERRORS: &str = "tlsedge_local_errors_total";

/// In-place upgrade hand-overs by this process to a successor `{result}` (`completed`,
/// `aborted`).
pub const UPGRADES: &str = "tlsedge_upgrade_handovers_total";

/// Registers descriptions (HELP lines) for every metric.
pub(crate) fn describe_all() {
    describe_counter!(HANDSHAKES, "Completed TLS handshakes.");
    describe_counter!(
        UPGRADES,
        "Hand-overs of the listening sockets to a new tlsedge (run --upgrade): completed, or aborted (the successor failed or went away before taking over)."
    );
    describe_counter!(
        LOCAL_ERRORS,
        "Operations that failed because this process or machine ran out of a resource (file descriptors, buffers, ports); backends are not blamed."
    );
    describe_counter!(
        HANDSHAKE_GROUPS,
        "Completed TLS handshakes by key exchange group (X25519MLKEM768 is post-quantum hybrid)."
    );
    describe_histogram!(
        HANDSHAKE_DURATION,
        Unit::Seconds,
        "Time from TCP accept to TLS handshake completion."
    );
    describe_counter!(HANDSHAKE_FAILURES, "TLS handshakes that failed, by reason.");
    describe_gauge!(CONNECTIONS_ACTIVE, "Client connections currently open.");
    describe_counter!(CONNECTIONS, "Client connections proxied to a host.");
    describe_counter!(
        CONNECTIONS_CLOSED,
        "Proxied connections by outcome (ok, idle_timeout, half_closed_timeout, no_backend, client_error, backend_error, backend_tls_error, proxy_header_error, drain_timeout)."
    );
    describe_counter!(BACKEND_CONNECT_ERRORS, "Failed TCP connects to backends.");
    describe_counter!(
        BACKEND_TLS_ERRORS,
        "Failed TLS handshakes with backends (backend_tls)."
    );
    describe_counter!(
        RESOLVE_ERRORS,
        "Failed DNS lookups of backend names (the last good addresses stay in use)."
    );
    describe_counter!(
        HEALTH_CHECK_FAILURES,
        "Failed active health probes (TCP connect) of backends."
    );
    describe_gauge!(
        BACKEND_UP,
        "1 if the backend is usable, 0 while it cools down after a failure or fails its health checks."
    );
    describe_counter!(
        BACKEND_STATE_CHANGES,
        "Backends marked down (cooldown after a failure, failed health checks) or up again."
    );
    describe_counter!(BYTES, Unit::Bytes, "Plaintext bytes relayed.");
    describe_counter!(CONFIG_RELOADS, "Configuration loads by result.");
    describe_gauge!(
        CONFIG_GENERATION,
        "Generation number of the configuration being served."
    );
    describe_counter!(
        PROXY_PROTOCOL_ERRORS,
        "Connections refused at their PROXY header, by reason (untrusted, malformed, timeout)."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests by host, route, method and status (backend answers and tlsedge's own)."
    );
    describe_histogram!(
        HTTP_REQUEST_DURATION,
        Unit::Seconds,
        "HTTP request duration, from the request head to the response's last byte."
    );
    describe_gauge!(HTTP_REQUESTS_ACTIVE, "HTTP requests in flight.");
    describe_counter!(
        HTTP_BACKEND_REQUESTS,
        "Requests sent to backends, by the backend's status (or error, timeout)."
    );
    describe_counter!(
        HTTP_MISDIRECTED,
        "Requests answered 421: their host is not served by their connection's certificate host."
    );
    describe_counter!(
        HTTP_PROTOCOL_ERRORS,
        "HTTP client connections ended by a protocol error (header_timeout, headers_too_large, malformed, incomplete, other)."
    );
    describe_counter!(
        HTTP_REDIRECTS,
        "Requests on the plain-HTTP redirect listeners (redirected, unknown_host)."
    );
    describe_counter!(
        ACME_ORDERS,
        "ACME orders by result (issued, ca_error, unreachable, challenge_failed, timeout, storage, setup, protocol)."
    );
    describe_gauge!(
        ACME_NEXT_RENEWAL,
        Unit::Seconds,
        "Unix time of the next ACME renewal of the host's certificates (or the next attempt to obtain one)."
    );
    describe_gauge!(
        ACME_LAST_ERROR,
        Unit::Seconds,
        "Unix time of the host's last failed ACME order."
    );
    describe_counter!(
        ACME_CHALLENGES,
        "ACME challenge validations answered (tls-alpn-01, http-01)."
    );
    describe_counter!(
        ACCEPT_ERRORS,
        "Failed accept() calls (e.g. out of file descriptors)."
    );
}
