-- wrk script of benches/compare/http.sh: when wrk is done, print one JSON line with the load
-- generator's field names (ops, errors, ops_per_s, p50_us, p99_us, ...). `bytes_read` counts
-- every byte wrk read (headers included); `mb_per_s` is derived from it.
done = function(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        '{"client":"wrk","ops":%d,"errors":%d,"errors_status":%d,"errors_socket":%d,' ..
        '"elapsed_s":%.3f,"ops_per_s":%.1f,"bytes_read":%d,"mb_per_s":%.1f,' ..
        '"p50_us":%d,"p99_us":%d}\n',
        summary.requests, e.connect + e.read + e.write + e.status + e.timeout, e.status,
        e.connect + e.read + e.write + e.timeout, secs, summary.requests / secs, summary.bytes,
        summary.bytes / secs / 1e6, latency:percentile(50), latency:percentile(99)))
end
