using System.Globalization;
using System.Net;
using System.Text;
using Prometheus;
using VirtioSharp.Block;
using VirtioSharp.VhostUser.Backend;

namespace VirtioSharp.Cli.Metrics;

/// <summary>
/// The numbers of one <c>vblk serve</c>, per queue: requests by type, bytes, errors by status,
/// chains in flight, request latency, polling windows and sleeps, time held back by the limits.
/// They are read from the device's per-queue counters when asked (a scrape, SIGUSR1), so the
/// request path counts nothing more for them. <see cref="Serve"/> exposes them as Prometheus text
/// over HTTP with prometheus-net's stand-alone server.
/// </summary>
internal sealed class ServeMetrics : IDisposable
{
    private static readonly string[] TypeNames = ["in", "out", "", "", "flush", "", "", "", "get_id", "", "", "discard", "", "write_zeroes", "", "other"];
    private readonly BlkDevice _device;
    private readonly VhostUserBlkServer _server;
    private readonly CollectorRegistry _registry = Prometheus.Metrics.NewCustomRegistry();
    private readonly Counter _requests, _bytes, _errors, _pollWindows, _pollHits, _sleeps, _throttled, _bounced, _pageCached, _ringWrites, _syncs, _resent;
    private readonly Gauge _inFlight, _pollWindow;
    private readonly Histogram _latency;
    private readonly long[][] _latencySeen;
    private readonly Lock _collect = new();
    private MetricServer? _http;

    public ServeMetrics(BlkDevice device, VhostUserBlkServer server)
    {
        _device = device;
        _server = server;
        var f = Prometheus.Metrics.WithCustomRegistry(_registry);
        _requests = f.CreateCounter("vblk_requests_total", "Requests completed, by queue and type", "queue", "type");
        _bytes = f.CreateCounter("vblk_bytes_total", "Bytes moved by completed requests, by queue and direction", "queue", "direction");
        _errors = f.CreateCounter("vblk_errors_total", "Requests that did not succeed, by queue and status (ioerr, unsupp, malformed chains)", "queue", "status");
        _inFlight = f.CreateGauge("vblk_in_flight", "Chains taken from the ring and not yet used", "queue");
        _latency = f.CreateHistogram("vblk_request_duration_seconds",
            "Time from taking a chain to writing its status (sum: bucket bounds, not exact times)",
            ["queue"], new HistogramConfiguration { Buckets = [.. Enumerable.Range(0, BlkStats.LatencyBuckets).Select(BlkStats.LatencyBound)] });
        _pollWindows = f.CreateCounter("vblk_poll_windows_total", "Times a queue worker looked at its ring before sleeping", "queue");
        _pollHits = f.CreateCounter("vblk_poll_hits_total", "Polling windows that found work", "queue");
        _sleeps = f.CreateCounter("vblk_sleeps_total", "Times a queue worker went to sleep", "queue");
        _pollWindow = f.CreateGauge("vblk_poll_window_seconds", "A queue worker's current polling window (adapted)", "queue");
        _throttled = f.CreateCounter("vblk_throttled_seconds_total", "Time a queue's requests waited for the disk's limits", "queue");
        _bounced = f.CreateCounter("vblk_bounced_requests_total", "Requests copied through the aligned bounce buffer (--cache none, unaligned guest buffers)", "queue");
        _pageCached = f.CreateCounter("vblk_page_cache_requests_total", "Requests done through the page cache (--cache none, offset or length not aligned)", "queue");
        _ringWrites = f.CreateCounter("vblk_direct_ring_writes_total", "Aligned writes handed to the queue's io_uring on the O_DIRECT descriptor (--cache none)", "queue");
        _resent = f.CreateCounter("vblk_calls_resent_total", "Interrupts sent again because the driver kept waiting for used buffers it had been told about (a lost interrupt)", "queue");
        _syncs = f.CreateCounter("vblk_fdatasyncs_total", "fdatasync calls made for flushes and stable writes (none with --cache unsafe)");
        _latencySeen = new long[device.NumQueues][];
        for (var q = 0; q < _latencySeen.Length; q++)
            _latencySeen[q] = new long[BlkStats.LatencyBuckets + 1];
        _registry.AddBeforeCollectCallback(Collect);
    }

    /// <summary>Serves the metrics on http://ADDRESS/metrics; an unusable address is an <see cref="ArgumentException"/> with one line.</summary>
    public void Serve(string address)
    {
        var colon = address.LastIndexOf(':');
        var host = colon > 0 ? address[..colon] : "";
        if (colon <= 0 || !int.TryParse(address.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535
            || host.Contains('/'))
            throw new ArgumentException($"--metrics '{address}' is not HOST:PORT (for example 127.0.0.1:9100)");
        var server = new MetricServer(host, port, "metrics/", _registry);
        try
        {
            server.Start();
        }
        catch (HttpListenerException e)
        {
            server.Dispose();
            throw new ArgumentException($"--metrics {address}: {e.Message}");
        }
        _http = server;
    }

    private void Collect()
    {
        lock (_collect)
        {
            var stats = _device.Stats;
            var throttle = _device.Throttle;
            var pollers = _server.Pollers;
            for (var q = 0; q < stats.Queues; q++)
            {
                var label = q.ToString(CultureInfo.InvariantCulture);
                var s = stats.Snapshot(q);
                for (var t = 0; t < s.ByType.Length; t++)
                {
                    if (s.ByType[t] != 0 || t is 0 or 1 or 4)
                        _requests.WithLabels(label, TypeNames[t] is { Length: > 0 } name ? name : "other").IncTo(s.ByType[t]);
                }
                _bytes.WithLabels(label, "read").IncTo(s.BytesRead);
                _bytes.WithLabels(label, "write").IncTo(s.BytesWritten);
                _errors.WithLabels(label, "ioerr").IncTo(s.IoErrors);
                _errors.WithLabels(label, "unsupp").IncTo(s.Unsupported);
                _errors.WithLabels(label, "malformed").IncTo(s.Malformed);
                _inFlight.WithLabels(label).Set(_server.QueueInFlight(q));
                var seen = _latencySeen[q];
                var histogram = _latency.WithLabels(label);
                for (var b = 0; b < s.Latency.Length; b++)
                {
                    var delta = s.Latency[b] - seen[b];
                    if (delta > 0)
                        histogram.Observe(b < BlkStats.LatencyBuckets ? BlkStats.LatencyBound(b) : 2 * BlkStats.LatencyBound(b - 1), delta);
                    seen[b] = s.Latency[b];
                }
                var p = pollers[q];
                _pollWindows.WithLabels(label).IncTo(p.Windows);
                _pollHits.WithLabels(label).IncTo(p.Hits);
                _sleeps.WithLabels(label).IncTo(p.Sleeps);
                _pollWindow.WithLabels(label).Set(p.WindowMicroseconds * 1e-6);
                _throttled.WithLabels(label).IncTo(throttle?.ThrottledSeconds(q) ?? 0);
                _resent.WithLabels(label).IncTo(_server.Watchdogs[q].Resent);
                if (_device.Backend is FileBackend file)
                {
                    _bounced.WithLabels(label).IncTo(file.BouncedOn(q));
                    _pageCached.WithLabels(label).IncTo(file.PageCachedOn(q));
                    _ringWrites.WithLabels(label).IncTo(file.RingWritesOn(q));
                }
            }
            if (_device.Backend is FileBackend f)
                _syncs.IncTo(f.Syncs);
        }
    }

    /// <summary>The same numbers as lines of text, one per queue (for the log on SIGUSR1).</summary>
    public IEnumerable<string> Describe()
    {
        var stats = _device.Stats;
        for (var q = 0; q < stats.Queues; q++)
        {
            var s = stats.Snapshot(q);
            var p = _server.Pollers[q];
            var done = s.Latency.Sum();
            var line = new StringBuilder();
            line.Append(CultureInfo.InvariantCulture, $"queue {q}: {s.ByType[0]} reads ({s.BytesRead} bytes), {s.ByType[1]} writes ({s.BytesWritten} bytes), {s.ByType[4]} flushes, ");
            line.Append(CultureInfo.InvariantCulture, $"{s.ByType.Sum() - s.ByType[0] - s.ByType[1] - s.ByType[4]} other; errors: {s.IoErrors} ioerr, {s.Unsupported} unsupp, {s.Malformed} malformed; ");
            line.Append(CultureInfo.InvariantCulture, $"in flight {_server.QueueInFlight(q)}; latency mean {(done > 0 ? s.LatencySeconds / done * 1e6 : 0):0.0} us, p50 <= {Percentile(s.Latency, 50)}, p99 <= {Percentile(s.Latency, 99)}; ");
            line.Append(CultureInfo.InvariantCulture, $"polling {p.Windows} windows, {p.Hits} found work, {p.Sleeps} sleeps, window {p.WindowMicroseconds:0.#} us; ");
            line.Append(CultureInfo.InvariantCulture, $"{_server.Watchdogs[q].Resent} interrupts sent again");
            if (_device.Throttle is { } t)
                line.Append(CultureInfo.InvariantCulture, $"; throttled {t.ThrottledSeconds(q):0.000} s in {t.Waits(q)} waits");
            if (_device.Backend is FileBackend { Alignment: not null } file)
                line.Append(CultureInfo.InvariantCulture, $"; {file.BouncedOn(q)} bounced, {file.PageCachedOn(q)} through the page cache, {file.RingWritesOn(q)} direct writes through io_uring");
            yield return line.ToString();
            if (_server.DescribeRing(q) is { } ring)
                yield return $"queue {q} ring: {ring}";
        }
        if (_device.Backend is FileBackend synced)
            yield return string.Create(CultureInfo.InvariantCulture, $"image: {synced.Syncs} fdatasync calls (cache {FileCacheModes.Name(synced.CacheMode)})");
    }

    private static string Percentile(long[] buckets, double percent)
    {
        var total = buckets.Sum();
        if (total == 0)
            return "-";
        var want = (long)Math.Ceiling(total * percent / 100);
        long seen = 0;
        for (var b = 0; b < buckets.Length; b++)
        {
            seen += buckets[b];
            if (seen >= want)
                return b < BlkStats.LatencyBuckets ? $"{1L << b} us" : $"> {1L << (b - 1)} us";
        }
        return "-";
    }

    public void Dispose()
    {
        _http?.Stop();
        _http?.Dispose();
    }
}
