using System.CommandLine;
using System.Text.Json;
using VirtioSharp.Block;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Cli;

/// <summary>
/// <c>vblk bench</c> survives its back-end: the back-end process is killed (SIGKILL) and started
/// again on the same socket and image twice during the run, with requests outstanding each
/// time. The run ends with zero errors, having made the outstanding requests available again
/// to each new back-end, and <c>vblk io verify</c> over the same range passes afterwards. Against
/// <c>vblk serve</c> and against qemu-storage-daemon, both started for real.
/// </summary>
public sealed class FrontendReconnectTests
{
    private const string Region = "16M";

    /// <summary>A back-end process that can be killed and started again on the same socket and image.</summary>
    private interface IRestartable : IDisposable
    {
        string Socket { get; }
        void Kill();
        void Start();
    }

    private sealed class VblkServe(TempDir dir, string image) : IRestartable
    {
        private BackgroundProcess? _process;
        public string Socket { get; } = dir.File("vblk.sock");

        public void Start()
        {
            _process?.Dispose();
            _process = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", image, "--socket", Socket]);
            // The socket file appears once it listens; a process that exits is reported at once.
            _process.WaitForSocket(Socket, TimeSpan.FromSeconds(30));
        }

        public void Kill()
        {
            TestNative.Kill(_process!.Pid, 9);
            _process.WaitForExit(TimeSpan.FromSeconds(10));
            File.Delete(Socket); // the dead back-end's: the next one's socket file is then the sign that it listens
        }

        public void Dispose() => _process?.Dispose();
    }

    private sealed class Qsd(TempDir dir, string image) : IRestartable
    {
        private QemuStorageDaemon? _daemon;
        public string Socket => Path.Combine(dir.Path, "vhost.sock");

        public void Start()
        {
            _daemon?.Dispose();
            _daemon = QemuStorageDaemon.ExportFile(dir, image);
        }

        public void Kill() => _daemon!.Kill();

        public void Dispose() => _daemon?.Dispose();
    }

    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    /// <summary><c>vblk-packed</c>: the same over packed rings (qemu-storage-daemon offers none), each ring started afresh at slot 0 for the new back-end.</summary>
    [Theory]
    [InlineData("vblk")]
    [InlineData("vblk-packed")]
    [InlineData("qemu-storage-daemon")]
    public async Task Bench_survives_two_back_end_kills_with_zero_errors_and_verify_passes_after(string peer)
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 32 << 20);
        using IRestartable backend = peer == "qemu-storage-daemon" ? new Qsd(dir, image) : new VblkServe(dir, image);
        backend.Start();
        string[] format = peer == "vblk-packed" ? ["--packed"] : [];

        var bench = Run(BenchCommand.Create(), ["--socket", backend.Socket, "--rw", "randrw", "--runtime", "15", "--ramp", "0",
            "--iodepth", "8", "--size", Region, "--json", "--reconnect", "30", .. format]);
        for (var kill = 0; kill < 2; kill++)
        {
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.False(bench.IsCompleted, "bench ended before the back-end was killed");
            backend.Kill(); // while bench keeps 8 requests in flight
            await Task.Delay(TimeSpan.FromSeconds(1));
            backend.Start();
        }
        var (code, output, error) = await bench.WaitAsync(TimeSpan.FromSeconds(90));
        Assert.True(code == 0, $"bench exited {code}: {error}");
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        Assert.Equal(0, root.GetProperty("errors").GetInt64());
        Assert.Equal(2, root.GetProperty("reconnects").GetInt32());
        Assert.True(root.GetProperty("resubmitted").GetInt64() > 0, "no kill landed on an outstanding request");
        Assert.True(root.GetProperty("total").GetProperty("ops").GetInt64() > 0);
        Assert.Equal(2, error.Split('\n').Count(l => l.StartsWith("vblk bench: reconnected to", StringComparison.Ordinal)));
        Assert.Contains("vblk bench: vhost-user back-end closed the connection; reconnecting to", error);

        var verify = await Run(IoCommand.Create(), ["--socket", backend.Socket, .. format, "verify", "--length", Region, "--seed", "9"]);
        Assert.True(verify.Code == 0, verify.Err);
        Assert.Contains("OK", verify.Out);
    }

    [Fact]
    public async Task Without_reconnect_a_lost_back_end_ends_the_run_in_one_line()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 8 << 20);
        using var backend = new VblkServe(dir, image);
        backend.Start();
        var bench = Run(BenchCommand.Create(), "--socket", backend.Socket, "--rw", "randread", "--runtime", "20", "--ramp", "0", "--reconnect", "0");
        await Task.Delay(TimeSpan.FromSeconds(2));
        backend.Kill();
        var (code, _, error) = await bench.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, code);
        Assert.Contains("vblk bench: stopped early: vhost-user back-end closed the connection", error);
    }
}
