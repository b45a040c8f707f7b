using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using VirtioSharp.Block;
using VirtioSharp.Cli.Frontend;

namespace VirtioSharp.Cli.Commands;

/// <summary>
/// <c>vblk bench --socket PATH</c>: an fio-like load generator over our vhost-user front-end and
/// virtio-blk driver. With --zero-copy (the default) each request's data buffer lies in the shared
/// memory and goes out by <see cref="BlkDriver.SubmitDirectAsync"/>, so no byte is copied by us.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var socket = new Option<string>("--socket") { Description = "Unix socket of the vhost-user-blk back-end", Required = true };
        var rw = new Option<string>("--rw") { Description = "Pattern: randread, randwrite, read, write or randrw", DefaultValueFactory = _ => "randread" };
        rw.AcceptOnlyFromAmong("randread", "randwrite", "read", "write", "randrw");
        var bs = new Option<string>("--bs") { Description = "Block size of each request (K/M suffixes allowed)", DefaultValueFactory = _ => "4K" };
        var iodepth = new Option<int>("--iodepth") { Description = "Requests kept in flight per queue", DefaultValueFactory = _ => 1 };
        var queues = new Option<int>("--queues") { Description = "Virtqueues to use (capped at what the device offers)", DefaultValueFactory = _ => 1 };
        var runtime = new Option<double>("--runtime") { Description = "Seconds to measure", DefaultValueFactory = _ => 10 };
        var ramp = new Option<double>("--ramp") { Description = "Seconds to run before measuring (warm-up)", DefaultValueFactory = _ => 1 };
        var size = new Option<string?>("--size") { Description = "Region of the disk to use, from offset 0 (default: whole disk)" };
        var mix = new Option<int>("--rwmixread") { Description = "Percentage of reads for randrw", DefaultValueFactory = _ => 50 };
        var zeroCopy = new Option<bool>("--zero-copy") { Description = "Data buffers in shared memory, no copies (--zero-copy false: copy through the driver's bounce buffers)", DefaultValueFactory = _ => true };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON on stdout" };
        var seed = new Option<int>("--seed") { Description = "Seed for random offsets", DefaultValueFactory = _ => 1 };
        var packed = new Option<bool>("--packed") { Description = "Use packed virtqueues (VIRTIO_F_RING_PACKED); fails if the back-end does not offer them" };
        var pollUs = new Option<int>("--poll-us") { Description = "Microseconds each queue's completion thread keeps watching the used ring before it sleeps on the call eventfd (adapted; 0: sleep at once)" };
        var completions = new Option<string>("--completions")
        {
            Description = "Where a finished request's worker continues: pool (the thread pool) or inline (on its queue's completion thread, which then submits the next request itself, without a hand-off; the default with --poll-us)",
        };
        completions.AcceptOnlyFromAmong("pool", "inline");
        var queueCpus = new Option<string?>("--queue-cpus")
        {
            Description = "Pin queue i's completion thread to entry i mod count of this CPU list (for example 0,1); with --completions inline that thread also submits, so the queue's whole front-end stays on one core (pin vblk serve --queue-cpus the same way to keep both sides of a queue together); default: not pinned",
        };
        var reconnect = FrontendSession.ReconnectOption();
        var cmd = new Command("bench", "Measure IOPS, bandwidth and latency against a vhost-user-blk back-end")
        {
            socket, rw, bs, iodepth, queues, runtime, ramp, size, mix, zeroCopy, json, seed, reconnect, pollUs, packed, completions, queueCpus,
        };
        cmd.SetAction((parse, ct) => CliErrors.RunAsync("bench", parse.InvocationConfiguration.Error, async () =>
        {
            var settings = new BenchSettings(
                parse.GetValue(socket)!,
                parse.GetValue(rw)!,
                Sizes.Parse(parse.GetValue(bs)!, "--bs"),
                parse.GetValue(iodepth),
                parse.GetValue(queues),
                parse.GetValue(runtime),
                parse.GetValue(ramp),
                parse.GetValue(size) is { } s ? Sizes.Parse(s, "--size") : null,
                parse.GetValue(mix),
                parse.GetValue(zeroCopy),
                parse.GetValue(json),
                parse.GetValue(seed),
                FrontendSession.ReconnectTimeout(parse.GetValue(reconnect)),
                parse.GetValue(pollUs),
                parse.GetValue(packed),
                parse.GetValue(completions) is { } c ? c == "inline" : parse.GetValue(pollUs) > 0)
            {
                QueueCpus = parse.GetValue(queueCpus),
            };
            return await new BenchRun(settings, parse.InvocationConfiguration.Output, parse.InvocationConfiguration.Error).RunAsync(ct);
        }));
        return cmd;
    }
}

internal sealed record BenchSettings(string Socket, string Rw, ulong BlockSize, int IoDepth, int Queues, double Runtime, double Ramp,
    ulong? Size, int ReadMix, bool ZeroCopy, bool Json, int Seed, TimeSpan Reconnect = default, int PollUs = 0, bool Packed = false, bool InlineCompletions = false)
{
    /// <summary>--queue-cpus as given; null: not pinned.</summary>
    public string? QueueCpus { get; init; }

    public bool Random => Rw.StartsWith("rand", StringComparison.Ordinal);

    public void Validate()
    {
        if (BlockSize == 0 || BlockSize % BlkLayout.SectorSize != 0 || BlockSize > 16 << 20)
            throw new CliException($"--bs {BlockSize} must be a multiple of 512 up to 16M", true);
        if (IoDepth is < 1 or > 1024)
            throw new CliException($"--iodepth {IoDepth} must be 1..1024", true);
        if (Queues is < 1 or > 64)
            throw new CliException($"--queues {Queues} must be 1..64", true);
        if (!(Runtime > 0) || Runtime > 24 * 3600)
            throw new CliException($"--runtime {Runtime} must be a positive number of seconds", true);
        if (!(Ramp >= 0))
            throw new CliException($"--ramp {Ramp} must be zero or more seconds", true);
        if (PollUs is < 0 or > 1_000_000)
            throw new CliException($"--poll-us {PollUs} must be 0..1000000 microseconds", true);
        if (ReadMix is < 0 or > 100)
            throw new CliException($"--rwmixread {ReadMix} must be 0..100", true);
        if (QueueCpus is not null)
            ParseQueueCpus();
    }

    public int[]? ParseQueueCpus()
    {
        if (QueueCpus is null)
            return null;
        try
        {
            return VirtioSharp.Native.CpuList.Parse(QueueCpus, "--queue-cpus", Environment.ProcessorCount);
        }
        catch (ArgumentException e)
        {
            throw new CliException(e.Message, true);
        }
    }
}

/// <summary>One benchmark: a session, one async worker per in-flight request, a progress line and the summary.</summary>
internal sealed class BenchRun(BenchSettings settings, TextWriter output, TextWriter error)
{
    private volatile bool _stop;
    private volatile bool _recording;
    private Exception? _failure;
    private long _cursor;

    private sealed class Worker
    {
        public readonly LatencyHistogram Reads = new();
        public readonly LatencyHistogram Writes = new();
        public long ReadOps, WriteOps, ReadBytes, WriteBytes, Errors;
        public ulong Buffer;          // shared-memory address (zero-copy)
        public byte[]? Managed;       // managed buffer (copying)
        public ulong Rng;
        public int Queue;             // the virtqueue this worker submits on
        // Workers of different queues run on different threads: keep their counters apart.
#pragma warning disable CS0169, IDE0051 // padding, never read
        private readonly long _pad0, _pad1, _pad2, _pad3, _pad4, _pad5, _pad6, _pad7;
#pragma warning restore CS0169, IDE0051
    }

    public async Task<int> RunAsync(CancellationToken cancel)
    {
        var s = settings;
        s.Validate();
        var totalDepth = s.IoDepth * s.Queues;
        // One descriptor per request with indirect descriptors (qemu-storage-daemon and vblk serve offer them).
        // vhost-user cannot ask for the largest ring a back-end takes; 256 is what both accept by default.
        var queueSize = (int)Math.Min(256, System.Numerics.BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, s.IoDepth)));
        var maxTransfer = s.ZeroCopy ? 4096 : (int)Math.Max(4096, s.BlockSize);
        var direct = s.ZeroCopy ? (ulong)totalDepth * ((s.BlockSize + 4095) & ~4095UL) : 0;
        using var session = FrontendSession.Open(s.Socket, s.Queues, queueSize, maxTransfer, direct + (1 << 20),
            reconnect: s.Reconnect, onReconnect: line => error.WriteLine($"vblk bench: {line}"), pollMicroseconds: s.PollUs, packed: s.Packed, inlineCompletions: s.InlineCompletions, queueCpus: s.ParseQueueCpus());
        var driver = session.Driver;
        var region = Math.Min(s.Size ?? driver.Capacity, driver.Capacity);
        if (region < s.BlockSize)
            throw new CliException($"--size {region} is smaller than one block of {s.BlockSize} bytes", true);
        if (s.Rw != "randread" && s.Rw != "read" && driver.ReadOnly)
            throw new CliException("the device is read-only (VIRTIO_BLK_F_RO); use --rw randread or read");
        if (driver.Depth < s.IoDepth)
            error.WriteLine($"vblk bench: a queue holds {driver.Depth} requests; iodepth is effectively {driver.Depth}");
        if (driver.QueueCount < s.Queues)
            error.WriteLine($"vblk bench: the device offers {driver.QueueCount} queue(s); using {driver.QueueCount}");

        var workers = new Worker[driver.QueueCount * s.IoDepth];
        var fill = new Random(s.Seed);
        for (var i = 0; i < workers.Length; i++)
        {
            // A queue's workers are made together (and so lie together in memory); each submits on its own queue.
            var w = new Worker { Rng = (ulong)(s.Seed * 7919 + i + 1) * 0x9E3779B97F4A7C15UL, Queue = i / s.IoDepth };
            if (s.ZeroCopy)
            {
                w.Buffer = session.Transport.Allocator.Allocate(s.BlockSize, 4096);
                fill.NextBytes(session.Transport.Memory.GetSpan(w.Buffer, (int)s.BlockSize));
            }
            else
            {
                w.Managed = GC.AllocateArray<byte>((int)s.BlockSize, pinned: true);
                fill.NextBytes(w.Managed);
            }
            workers[i] = w;
        }

        var tasks = new Task[workers.Length];
        for (var i = 0; i < workers.Length; i++)
        {
            var w = workers[i];
            tasks[i] = Task.Run(() => WorkAsync(driver, w, region, cancel), cancel);
        }

        // Warm-up, then measure.
        var rampEnd = Stopwatch.GetTimestamp() + (long)(s.Ramp * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < rampEnd && !_stop && !cancel.IsCancellationRequested)
            await Task.Delay(50, CancellationToken.None);
        foreach (var w in workers)
            ResetCounters(w);
        var process = Process.GetCurrentProcess();
        process.Refresh();
        var cpuUser0 = process.UserProcessorTime;
        var cpuSys0 = process.PrivilegedProcessorTime;
        var start = Stopwatch.GetTimestamp();
        _recording = true;
        var end = start + (long)(s.Runtime * Stopwatch.Frequency);
        var progress = new ProgressLine(error, s.Json);
        long lastOps = 0, lastBytes = 0;
        var lastTick = start;
        while (!_stop && !cancel.IsCancellationRequested)
        {
            var now = Stopwatch.GetTimestamp();
            if (now >= end)
                break;
            var wait = Math.Min(end - now, Stopwatch.Frequency) * 1000 / Stopwatch.Frequency;
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Max(1, wait)), CancellationToken.None);
            now = Stopwatch.GetTimestamp();
            Sum(workers, out var ops, out var bytes, out _);
            var dt = (double)(now - lastTick) / Stopwatch.Frequency;
            if (dt >= 0.5)
            {
                progress.Update($"{(double)(now - start) / Stopwatch.Frequency,5:0}s  {(ops - lastOps) / dt,10:N0} IOPS  {(bytes - lastBytes) / dt / 1e6,9:0.0} MB/s  in flight {driver.Outstanding}");
                lastOps = ops;
                lastBytes = bytes;
                lastTick = now;
            }
        }
        _recording = false;
        var elapsed = (double)(Stopwatch.GetTimestamp() - start) / Stopwatch.Frequency;
        process.Refresh();
        var cpuUser = (process.UserProcessorTime - cpuUser0).TotalSeconds;
        var cpuSys = (process.PrivilegedProcessorTime - cpuSys0).TotalSeconds;
        _stop = true;
        progress.Done();
        try
        {
            await Task.WhenAll(tasks);
        }
        catch (OperationCanceledException)
        {
        }
        // With inline completions the last worker may have finished on a queue's completion
        // thread, and this continuation with it: leave that thread before the session (and the
        // memory it is reaping) goes away, so disposing can wait for it.
        await Task.Yield();
        cancel.ThrowIfCancellationRequested();

        var reads = new LatencyHistogram();
        var writes = new LatencyHistogram();
        long readOps = 0, writeOps = 0, readBytes = 0, writeBytes = 0, errors = 0;
        foreach (var w in workers)
        {
            reads.Add(w.Reads);
            writes.Add(w.Writes);
            readOps += w.ReadOps;
            writeOps += w.WriteOps;
            readBytes += w.ReadBytes;
            writeBytes += w.WriteBytes;
            errors += w.Errors;
        }
        var result = new BenchResult(s, driver.QueueCount, elapsed, reads, writes, readOps, writeOps, readBytes, writeBytes, errors, cpuUser, cpuSys)
        {
            Reconnects = session.Transport.Reconnects,
            Resubmitted = session.Transport.Resubmitted,
        };
        if (s.Json)
            result.WriteJson(output);
        else
            result.WriteTable(output);
        if (_failure is not null)
        {
            error.WriteLine($"vblk bench: stopped early: {_failure.Message}");
            return 1;
        }
        if (errors > 0)
        {
            error.WriteLine($"vblk bench: {errors} requests completed with an error status");
            return 1;
        }
        return 0;
    }

    private static void ResetCounters(Worker w)
    {
        lock (w)
        {
            w.ReadOps = w.WriteOps = w.ReadBytes = w.WriteBytes = w.Errors = 0;
            w.Reads.Clear();
            w.Writes.Clear();
        }
    }

    private static void Sum(Worker[] workers, out long ops, out long bytes, out long errors)
    {
        ops = bytes = errors = 0;
        foreach (var w in workers)
        {
            ops += Volatile.Read(ref w.ReadOps) + Volatile.Read(ref w.WriteOps);
            bytes += Volatile.Read(ref w.ReadBytes) + Volatile.Read(ref w.WriteBytes);
            errors += Volatile.Read(ref w.Errors);
        }
    }

    private async Task WorkAsync(BlkDriver driver, Worker w, ulong region, CancellationToken cancel)
    {
        var s = settings;
        var bs = s.BlockSize;
        var blocks = region / bs;
        var sectorsPerBlock = bs >> BlkLayout.SectorShift;
        try
        {
            while (!_stop && !cancel.IsCancellationRequested)
            {
                bool read = s.Rw switch
                {
                    "randread" or "read" => true,
                    "randwrite" or "write" => false,
                    _ => (int)(NextRandom(ref w.Rng) % 100) < s.ReadMix,
                };
                ulong block = s.Random
                    ? NextRandom(ref w.Rng) % blocks
                    : (ulong)(Interlocked.Increment(ref _cursor) - 1) % blocks;
                var offset = block * bs;
                var t0 = Stopwatch.GetTimestamp();
                var ok = true;
                if (w.Managed is null)
                {
                    var status = await driver.SubmitDirectAsync(w.Queue, read ? BlkRequestType.In : BlkRequestType.Out,
                        block * sectorsPerBlock, w.Buffer, (uint)bs, cancel).ConfigureAwait(false);
                    ok = status == BlkStatus.Ok;
                }
                else if (read)
                    await driver.ReadAsync(offset, w.Managed, cancel).ConfigureAwait(false);
                else
                    await driver.WriteAsync(offset, w.Managed, cancel).ConfigureAwait(false);
                var ns = (Stopwatch.GetTimestamp() - t0) * 1_000_000_000 / Stopwatch.Frequency;
                if (!_recording)
                    continue;
                lock (w)
                {
                    if (!ok)
                        w.Errors++;
                    else if (read)
                    {
                        w.Reads.Record(ns);
                        w.ReadOps++;
                        w.ReadBytes += (long)bs;
                    }
                    else
                    {
                        w.Writes.Record(ns);
                        w.WriteOps++;
                        w.WriteBytes += (long)bs;
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception e)
        {
            Interlocked.CompareExchange(ref _failure, e, null);
            _stop = true;
        }
    }

    /// <summary>xorshift64*: a per-worker generator that allocates nothing.</summary>
    private static ulong NextRandom(ref ulong state)
    {
        var x = state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state = x;
        return x * 0x2545F4914F6CDD1DUL;
    }
}

/// <summary>
/// The live line on stderr: rewritten in place on a terminal, one line a second when stderr is a
/// file (unless the result goes out as JSON), nothing when the command writes somewhere else.
/// </summary>
internal sealed class ProgressLine(TextWriter error, bool json)
{
    private readonly bool _terminal = ReferenceEquals(error, Console.Error) && !Console.IsErrorRedirected;
    private readonly bool _lines = ReferenceEquals(error, Console.Error) && Console.IsErrorRedirected && !json;
    private int _width;

    public void Update(string text)
    {
        if (_terminal)
        {
            error.Write("\r" + text.PadRight(_width));
            _width = text.Length;
        }
        else if (_lines)
            error.WriteLine(text);
    }

    public void Done()
    {
        if (_terminal && _width > 0)
            error.Write("\r" + new string(' ', _width) + "\r");
    }
}

internal sealed record BenchResult(BenchSettings Settings, int Queues, double Seconds, LatencyHistogram Reads, LatencyHistogram Writes,
    long ReadOps, long WriteOps, long ReadBytes, long WriteBytes, long Errors, double CpuUser, double CpuSystem)
{
    /// <summary>Times the back-end went away and was reached again, and requests made available again then.</summary>
    public int Reconnects { get; init; }
    public long Resubmitted { get; init; }

    public void WriteTable(TextWriter w)
    {
        var s = Settings;
        var ci = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(ci, $"vblk bench: {s.Rw} bs={Sizes.Format(s.BlockSize)} iodepth={s.IoDepth} queues={Queues} runtime={Seconds:0.0}s zero-copy={(s.ZeroCopy ? "on" : "off")}"));
        w.WriteLine("          ops        IOPS      MB/s   lat mean    p50 (us)    p99 (us)  p99.9 (us)");
        if (ReadOps > 0 || s.Rw.Contains("read", StringComparison.Ordinal))
            Row(w, "read", ReadOps, ReadBytes, Reads);
        if (WriteOps > 0 || s.Rw.Contains("write", StringComparison.Ordinal))
            Row(w, "write", WriteOps, WriteBytes, Writes);
        if (ReadOps > 0 && WriteOps > 0)
            w.WriteLine(string.Create(ci, $"total {ReadOps + WriteOps,9} {(ReadOps + WriteOps) / Seconds,11:0} {(ReadBytes + WriteBytes) / Seconds / 1e6,9:0.0}"));
        var cpu = CpuUser + CpuSystem;
        w.WriteLine(string.Create(ci, $"cpu   {cpu:0.00} s ({CpuUser:0.00} user, {CpuSystem:0.00} system) = {cpu / Seconds * 100:0}% of one core, {(ReadOps + WriteOps > 0 ? cpu * 1e6 / (ReadOps + WriteOps) : 0):0.0} us per request"));
        if (Reconnects > 0)
            w.WriteLine($"reconnects {Reconnects} ({Resubmitted} outstanding requests made available again)");
        if (Errors > 0)
            w.WriteLine($"errors {Errors}");
    }

    private void Row(TextWriter w, string name, long ops, long bytes, LatencyHistogram h) =>
        w.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{name,-5} {ops,9} {ops / Seconds,11:0} {bytes / Seconds / 1e6,9:0.0} {h.Mean / 1000,10:0.0} {h.Percentile(50) / 1000,11:0.0} {h.Percentile(99) / 1000,11:0.0} {h.Percentile(99.9) / 1000,11:0.0}"));

    public void WriteJson(TextWriter output)
    {
        using var stream = new MemoryStream();
        using (var j = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            var s = Settings;
            j.WriteStartObject();
            j.WriteString("socket", s.Socket);
            j.WriteString("rw", s.Rw);
            j.WriteNumber("bs", s.BlockSize);
            j.WriteNumber("iodepth", s.IoDepth);
            j.WriteNumber("queues", Queues);
            j.WriteBoolean("zero_copy", s.ZeroCopy);
            j.WriteNumber("runtime_s", Math.Round(Seconds, 3));
            Direction(j, "read", ReadOps, ReadBytes, Reads);
            Direction(j, "write", WriteOps, WriteBytes, Writes);
            j.WriteStartObject("total");
            j.WriteNumber("ops", ReadOps + WriteOps);
            j.WriteNumber("iops", Math.Round((ReadOps + WriteOps) / Seconds, 1));
            j.WriteNumber("mb_s", Math.Round((ReadBytes + WriteBytes) / Seconds / 1e6, 2));
            j.WriteEndObject();
            j.WriteStartObject("cpu");
            j.WriteNumber("user_s", Math.Round(CpuUser, 3));
            j.WriteNumber("system_s", Math.Round(CpuSystem, 3));
            j.WriteNumber("percent_of_one_core", Math.Round((CpuUser + CpuSystem) / Seconds * 100, 1));
            j.WriteNumber("us_per_request", ReadOps + WriteOps > 0 ? Math.Round((CpuUser + CpuSystem) * 1e6 / (ReadOps + WriteOps), 2) : 0);
            j.WriteEndObject();
            j.WriteNumber("errors", Errors);
            j.WriteNumber("reconnects", Reconnects);
            j.WriteNumber("resubmitted", Resubmitted);
            j.WriteEndObject();
        }
        output.WriteLine(System.Text.Encoding.UTF8.GetString(stream.ToArray()));
    }

    private void Direction(Utf8JsonWriter j, string name, long ops, long bytes, LatencyHistogram h)
    {
        j.WriteStartObject(name);
        j.WriteNumber("ops", ops);
        j.WriteNumber("iops", Math.Round(ops / Seconds, 1));
        j.WriteNumber("mb_s", Math.Round(bytes / Seconds / 1e6, 2));
        j.WriteStartObject("lat_us");
        j.WriteNumber("mean", Math.Round(h.Mean / 1000, 2));
        j.WriteNumber("p50", Math.Round(h.Percentile(50) / 1000, 2));
        j.WriteNumber("p99", Math.Round(h.Percentile(99) / 1000, 2));
        j.WriteNumber("p99_9", Math.Round(h.Percentile(99.9) / 1000, 2));
        j.WriteNumber("max", Math.Round(h.Max / 1000.0, 2));
        j.WriteEndObject();
        j.WriteEndObject();
    }
}
