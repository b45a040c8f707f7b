using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.RegularExpressions;
using VirtioSharp.Block;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Diagnostics;
using VirtioSharp.Tests.VhostUser;

namespace VirtioSharp.Tests.Cli;

/// <summary>
/// <c>vblk serve</c>'s production controls, run in-process with <c>vblk bench</c> against them:
/// limits per disk, Prometheus metrics scraped over real HTTP, polling, and their bad input.
/// </summary>
public sealed class ServeControlsTests
{
    private static ServeSettings NullDisk(string socket, BlkLimits? limits = null, int pollUs = 0, string? metrics = null, int queues = 1) =>
        new(null, socket, ReadOnly: false, NumQueues: queues, QueueSize: 256, BlkSize: 512, Serial: "t", Backend: "null", Size: "64M",
            Strict: StrictMode.Off, Verbose: false, Limits: limits, PollUs: pollUs, Metrics: metrics);

    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    /// <summary>Serves until the returned handle is disposed; the serve task's exit code must be 0.</summary>
    private sealed class Serving : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task<int> _run;
        public readonly StringWriter Error = new();

        public Serving(ServeSettings settings)
        {
            _run = Task.Run(() => ServeCommand.Run(settings, Error, _stop.Token));
            TestServer.Eventually(() => File.Exists(settings.Socket) || _run.IsCompleted, "the socket to appear");
            Assert.False(_run.IsCompleted, Error.ToString());
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            Assert.Equal(0, await _run.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Equal("", Error.ToString());
            _stop.Dispose();
        }
    }

    [Fact]
    public async Task An_iops_limit_holds_within_five_percent_over_ten_seconds_and_delays_rather_than_fails()
    {
        using var dir = new TempDir();
        const double limit = 2000;
        await using (new Serving(NullDisk(dir.File("s.sock"), new BlkLimits { IopsTotal = limit })))
        {
            // Depth 16 offers far more than the limit; every request must still succeed (exit 0).
            var (code, output, error) = await Run(BenchCommand.Create(), "--socket", dir.File("s.sock"), "--iodepth", "16",
                "--runtime", "10", "--ramp", "0.5", "--json");
            Assert.True(code == 0, error);
            using var json = JsonDocument.Parse(output);
            var iops = json.RootElement.GetProperty("total").GetProperty("iops").GetDouble();
            Assert.InRange(iops, limit * 0.95, limit * 1.05);
            Assert.Equal(0, json.RootElement.GetProperty("errors").GetInt64());
        }
    }

    [Fact]
    public async Task A_bytes_limit_on_reads_holds_and_leaves_writes_alone()
    {
        using var dir = new TempDir();
        const double limit = 8 << 20; // 8 MiB/s of 64 KiB reads: 128 requests a second
        await using (new Serving(NullDisk(dir.File("s.sock"), new BlkLimits { BpsRead = limit })))
        {
            var (code, output, error) = await Run(BenchCommand.Create(), "--socket", dir.File("s.sock"), "--iodepth", "4", "--bs", "64K",
                "--runtime", "4", "--ramp", "0.5", "--json");
            Assert.True(code == 0, error);
            using var json = JsonDocument.Parse(output);
            var bytesPerSecond = json.RootElement.GetProperty("read").GetProperty("mb_s").GetDouble() * 1e6;
            Assert.InRange(bytesPerSecond, limit * 0.93, limit * 1.07);
            (code, output, error) = await Run(BenchCommand.Create(), "--socket", dir.File("s.sock"), "--iodepth", "4", "--bs", "64K",
                "--rw", "randwrite", "--runtime", "1", "--ramp", "0", "--json");
            Assert.True(code == 0, error);
            using var writes = JsonDocument.Parse(output);
            Assert.True(writes.RootElement.GetProperty("write").GetProperty("mb_s").GetDouble() * 1e6 > 2 * limit,
                "writes are not limited by a read limit");
        }
    }

    [Fact]
    public async Task Metrics_are_scraped_over_http_per_queue_with_polling_and_throttling_counters()
    {
        using var dir = new TempDir();
        var address = $"127.0.0.1:{FreePort()}";
        await using (new Serving(NullDisk(dir.File("s.sock"), new BlkLimits { IopsTotal = 1_000_000 }, pollUs: 1000, metrics: address, queues: 2)))
        {
            // The front-end polls too, and its completion threads submit the next requests themselves.
            var (code, output, error) = await Run(BenchCommand.Create(), "--socket", dir.File("s.sock"), "--iodepth", "2", "--queues", "2",
                "--rw", "randrw", "--runtime", "1", "--ramp", "0", "--poll-us", "20", "--json");
            Assert.True(code == 0, error);
            using var json = JsonDocument.Parse(output);
            var benchReads = json.RootElement.GetProperty("read").GetProperty("ops").GetInt64();

            using var http = new HttpClient();
            var text = await http.GetStringAsync($"http://{address}/metrics");
            double Value(string series)
            {
                var m = Regex.Match(text, "^" + Regex.Escape(series) + " (\\S+)$", RegexOptions.Multiline);
                Assert.True(m.Success, $"{series} is missing from:\n{text}");
                return double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
            }
            var reads = Value("vblk_requests_total{queue=\"0\",type=\"in\"}") + Value("vblk_requests_total{queue=\"1\",type=\"in\"}");
            Assert.True(reads >= benchReads, $"served {reads} reads, bench counted {benchReads}");
            Assert.True(Value("vblk_requests_total{queue=\"1\",type=\"out\"}") > 0);
            Assert.Equal(Value("vblk_requests_total{queue=\"0\",type=\"in\"}") * 4096, Value("vblk_bytes_total{queue=\"0\",direction=\"read\"}"));
            Assert.Equal(0, Value("vblk_errors_total{queue=\"0\",status=\"ioerr\"}"));
            Assert.Equal(0, Value("vblk_in_flight{queue=\"1\"}"));
            var served = Value("vblk_requests_total{queue=\"0\",type=\"in\"}") + Value("vblk_requests_total{queue=\"0\",type=\"out\"}");
            Assert.Equal(served, Value("vblk_request_duration_seconds_count{queue=\"0\"}"));
            Assert.Equal(served, Value("vblk_request_duration_seconds_bucket{queue=\"0\",le=\"+Inf\"}"));
            Assert.True(Value("vblk_poll_windows_total{queue=\"0\"}") > 0);
            Assert.True(Value("vblk_poll_hits_total{queue=\"0\"}") > 0);
            Assert.True(Value("vblk_sleeps_total{queue=\"0\"}") >= 0);
            Assert.True(Value("vblk_throttled_seconds_total{queue=\"0\"}") >= 0);
            Assert.Contains("# TYPE vblk_request_duration_seconds histogram", text);
        }
    }

    [Theory]
    [InlineData("--iops-limit", "0", "--iops-limit '0' must be a positive number of requests")]
    [InlineData("--iops-limit", "-5", "--iops-limit '-5' must be a positive number of requests")]
    [InlineData("--iops-write-limit", "lots", "--iops-write-limit 'lots' must be a positive number of requests")]
    [InlineData("--bps-limit", "0", "--bps-limit '0' must be a positive number of bytes (with an optional K, M, G or T suffix)")]
    [InlineData("--bps-read-limit", "12Q", "--bps-read-limit '12Q' must be a positive number of bytes (with an optional K, M, G or T suffix)")]
    [InlineData("--iops-burst", "10", "--iops-burst and --bps-burst go with a limit (--iops-limit, --bps-limit or a read or write variant)")]
    [InlineData("--poll-us", "-1", "--poll-us -1 must be 0..1000000 microseconds")]
    [InlineData("--metrics", "nowhere", "--metrics 'nowhere' is not HOST:PORT (for example 127.0.0.1:9100)")]
    [InlineData("--queue-cpus", "0,x", "--queue-cpus '0,x' is not a list of CPU numbers such as 0,1 or 0-3")]
    [InlineData("--queue-cpus", "3-1", "--queue-cpus '3-1' is not a list of CPU numbers such as 0,1 or 0-3")]
    [InlineData("--queue-cpus", "1023", "--queue-cpus: CPU 1023 does not exist (this machine has CPUs 0..{last})")]
    public async Task Bad_controls_are_one_line_and_exit_2_at_start(string option, string value, string message)
    {
        using var dir = new TempDir();
        var (code, _, error) = await Run(ServeCommand.Create(), "--backend", "null", "--size", "1M", "--socket", dir.File("s.sock"), option, value);
        Assert.Equal(ServeCommand.UsageError, code);
        Assert.Equal($"vblk serve: {message.Replace("{last}", (Environment.ProcessorCount - 1).ToString(CultureInfo.InvariantCulture), StringComparison.Ordinal)}", error.TrimEnd());
        Assert.False(File.Exists(dir.File("s.sock")));
    }

    [Fact]
    public async Task Queues_pinned_on_both_sides_carry_every_request_and_no_pinning_fails()
    {
        using var dir = new TempDir();
        var socket = dir.File("s.sock");
        var last = Environment.ProcessorCount - 1;
        var log = new ListLogSink();
        using var stop = new CancellationTokenSource();
        var error = new StringWriter();
        var run = Task.Run(() => ServeCommand.Run(NullDisk(socket, queues: 2) with { QueueCpus = $"0,{last}" }, error, stop.Token, log));
        TestServer.Eventually(() => log.Contains("QEMU: -chardev") || run.IsCompleted, "the start-up lines");
        Assert.False(run.IsCompleted, error.ToString());
        Assert.True(log.Contains($"queue workers pinned to CPUs 0,{last}"), string.Join("\n", log.Lines.Select(l => l.Message)));

        var (code, output, err) = await Run(BenchCommand.Create(), "--socket", socket, "--queues", "2", "--iodepth", "8", "--completions", "inline",
            "--queue-cpus", $"0-{last}", "--runtime", "0.5", "--ramp", "0.1", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(2, doc.RootElement.GetProperty("queues").GetInt32());
        Assert.True(doc.RootElement.GetProperty("read").GetProperty("ops").GetInt64() > 0, output);
        stop.Cancel();
        Assert.Equal(0, await run.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.DoesNotContain(log.Lines, l => l.Message.Contains("not pinned", StringComparison.Ordinal));
        // Every queue's requests were served (a pinned worker that never ran would leave its queue at zero).
        Assert.Equal(2, log.Lines.Count(l => Regex.IsMatch(l.Message, @"^queue [01]: stopped at available index [1-9]")));
    }

    [Fact]
    public async Task Bench_refuses_a_CPU_the_machine_lacks_in_one_line()
    {
        var (code, _, error) = await Run(BenchCommand.Create(), "--socket", "/nonexistent.sock", "--queue-cpus", "1023");
        Assert.NotEqual(0, code);
        Assert.Equal($"vblk bench: --queue-cpus: CPU 1023 does not exist (this machine has CPUs 0..{Environment.ProcessorCount - 1})", error.TrimEnd());
    }

    [Fact]
    public async Task A_metrics_address_in_use_is_one_line_and_exit_2_at_start()
    {
        using var dir = new TempDir();
        using var busy = new TcpListener(IPAddress.Loopback, 0);
        busy.Start();
        var port = ((IPEndPoint)busy.LocalEndpoint).Port;
        var (code, _, error) = await Run(ServeCommand.Create(), "--backend", "null", "--size", "1M", "--socket", dir.File("s.sock"),
            "--metrics", $"127.0.0.1:{port}");
        Assert.Equal(ServeCommand.UsageError, code);
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith($"vblk serve: --metrics 127.0.0.1:{port}: ", error);
        Assert.False(File.Exists(dir.File("s.sock")));
    }
}
