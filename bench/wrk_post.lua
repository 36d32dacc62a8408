-- wrk script for bench/run.py: POST a JSON body and print one JSON summary line at the end.
--
-- The body and the Authorization header come from the environment (BENCH_BODY, BENCH_AUTH) so
-- one script serves every scenario and target. No response() hook is defined on purpose: it
-- would make wrk hand every response to Lua and slow the load generator down.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "{}"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
   wrk.headers["Authorization"] = auth
end

function done(summary, latency, requests)
   local e = summary.errors
   -- Latencies are in microseconds; wrk's "status" errors are responses with a status >= 400.
   io.write(string.format(
      '\nBENCH_JSON {"requests":%d,"duration_s":%.6f,"bytes":%d,'
         .. '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"mean_ms":%.3f,"max_ms":%.3f,'
         .. '"non_2xx":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,'
         .. '"timeout_errors":%d}\n',
      summary.requests, summary.duration / 1e6, summary.bytes,
      latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
      latency:percentile(99) / 1e3, latency.mean / 1e3, latency.max / 1e3,
      e.status, e.connect, e.read, e.write, e.timeout))
end
