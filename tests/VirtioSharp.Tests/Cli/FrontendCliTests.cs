using System.CommandLine;
using System.Text.Json;
using VirtioSharp.Block;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Cli.Frontend;
using VirtioSharp.Tests.VhostUser;

namespace VirtioSharp.Tests.Cli;

/// <summary><c>vblk io</c> and <c>vblk bench</c> run in-process against our own back-end, and their helpers.</summary>
public sealed class FrontendCliTests
{
    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Io_subcommands_work_against_a_back_end_and_fail_with_one_line()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 4 << 20);
        using var serverDir = new TempDir();
        using var file = BlkPeer.ExportFile(PeerKind.Vblk, serverDir, image);

        var (code, output, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "info");
        Assert.True(code == 0, error);
        Assert.Contains("capacity          4194304 bytes", output);
        Assert.Contains("VIRTIO_BLK_F_FLUSH", output);
        Assert.Contains("serial            virtiosharp", output);

        (code, output, error) = await Run(IoCommand.Create(), "verify", "--socket", file.SocketPath, "--offset", "1M", "--length", "1536K", "--seed", "3");
        Assert.True(code == 0, error);
        Assert.Contains("OK", output);

        var input = dir.File("in.bin");
        File.WriteAllBytes(input, Enumerable.Repeat((byte)'A', 1024).ToArray());
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "write", "--offset", "0", "--in", input);
        Assert.True(code == 0, error);
        (code, output, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "read", "--offset", "0", "--length", "2K");
        Assert.True(code == 0, error);
        Assert.Contains("00000000  41 41 41 41 41 41 41 41  41 41 41 41 41 41 41 41  |AAAAAAAAAAAAAAAA|", output);
        Assert.Contains("\n*\n", output.ReplaceLineEndings("\n"));
        Assert.Contains("00000400  00 00", output);

        foreach (var sub in new[] { "flush" })
        {
            (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, sub);
            Assert.True(code == 0, error);
        }
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "discard", "--offset", "0", "--length", "4K");
        Assert.True(code == 0, error);
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "write-zeroes", "--offset", "4K", "--length", "4K");
        Assert.True(code == 0, error);

        // Mistakes: one line on stderr, non-zero exit, no stack trace.
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "read", "--offset", "4M", "--length", "512");
        AssertOneLineError(code, error, "beyond the end of the disk");
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "read", "--offset", "100", "--length", "512");
        AssertOneLineError(code, error, "multiples of 512");
        (code, _, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "read", "--offset", "1Q", "--length", "512");
        AssertOneLineError(code, error, "is not a size");
        (code, _, error) = await Run(IoCommand.Create(), "--socket", dir.File("missing.sock"), "info");
        AssertOneLineError(code, error, "no such socket");
        (code, _, error) = await Run(IoCommand.Create(), "--socket", image, "info");
        AssertOneLineError(code, error, "not a socket");
    }

    [Fact]
    public async Task A_back_end_that_refuses_the_features_is_one_line()
    {
        using var dir = new TempDir();
        using var fake = new FakeBackend(FakeBackend.Fault.RefuseFeatures, dir);
        var (code, _, error) = await Run(IoCommand.Create(), "--socket", fake.SocketPath, "info");
        AssertOneLineError(code, error, "refused features");
    }

    [Fact]
    public async Task Bench_reports_json_with_latency_percentiles()
    {
        using var dir = new TempDir();
        using var peer = BlkPeer.ExportNull(PeerKind.Vblk, dir, 64 << 20);
        var (code, output, error) = await Run(BenchCommand.Create(), "--socket", peer.SocketPath, "--rw", "randrw", "--bs", "8K",
            "--iodepth", "4", "--runtime", "0.5", "--ramp", "0", "--json");
        Assert.True(code == 0, error);
        using var json = JsonDocument.Parse(output);
        var root = json.RootElement;
        Assert.True(root.GetProperty("total").GetProperty("ops").GetInt64() > 0);
        var read = root.GetProperty("read").GetProperty("lat_us");
        Assert.True(read.GetProperty("p50").GetDouble() <= read.GetProperty("p99").GetDouble());
        Assert.True(read.GetProperty("p99").GetDouble() <= read.GetProperty("p99_9").GetDouble());
        Assert.True(root.GetProperty("write").GetProperty("ops").GetInt64() > 0);
        Assert.True(root.GetProperty("cpu").GetProperty("user_s").GetDouble() >= 0);

        (code, output, error) = await Run(BenchCommand.Create(), "--socket", peer.SocketPath, "--runtime", "0.3", "--ramp", "0", "--zero-copy", "false");
        Assert.True(code == 0, error);
        Assert.Contains("IOPS", output);
        Assert.Contains("zero-copy=off", output);

        (code, _, error) = await Run(BenchCommand.Create(), "--socket", peer.SocketPath, "--bs", "1000");
        AssertOneLineError(code, error, "multiple of 512");
    }

    [Fact]
    public void Histogram_percentiles_are_within_a_few_percent()
    {
        var h = new LatencyHistogram();
        for (var v = 1; v <= 100_000; v++)
            h.Record(v * 100L); // 100 ns .. 10 ms, uniform
        Assert.Equal(100_000, h.Count);
        Assert.InRange(h.Percentile(50), 5_000_000 * 0.97, 5_000_000 * 1.03);
        Assert.InRange(h.Percentile(99), 9_900_000 * 0.97, 9_900_000 * 1.03);
        Assert.InRange(h.Percentile(99.9), 9_990_000 * 0.97, 10_000_000.0);
        Assert.Equal(10_000_000, h.Max);
        var other = new LatencyHistogram();
        other.Record(1);
        h.Add(other);
        Assert.Equal(100_001, h.Count);
        h.Clear();
        Assert.Equal(0, h.Percentile(50));
    }

    [Fact]
    public void The_seeded_pattern_does_not_depend_on_how_a_range_is_cut()
    {
        var whole = new byte[8192];
        SeededPattern.Fill(whole, 1 << 20, 42);
        var pieces = new byte[8192];
        SeededPattern.Fill(pieces.AsSpan(0, 512), 1 << 20, 42);
        SeededPattern.Fill(pieces.AsSpan(512), (1 << 20) + 512, 42);
        Assert.Equal(whole, pieces);
        var otherSeed = new byte[8192];
        SeededPattern.Fill(otherSeed, 1 << 20, 43);
        Assert.NotEqual(whole, otherSeed);
    }

    private static void AssertOneLineError(int code, string error, string text)
    {
        Assert.NotEqual(0, code);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line, got: {error}");
        Assert.Contains(text, error);
        Assert.DoesNotContain(" at ", error);
    }
}
