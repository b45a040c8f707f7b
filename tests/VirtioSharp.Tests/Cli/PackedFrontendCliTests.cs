using System.CommandLine;
using System.Text.Json;
using VirtioSharp.Block;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Tests.VhostUser;

namespace VirtioSharp.Tests.Cli;

/// <summary>
/// <c>vblk io --packed</c> and <c>vblk bench --packed</c>: our front-end drives our back-end over packed
/// virtqueues (2.8) through vhost-user, and refuses in one line a back-end that does not offer them
/// (qemu-storage-daemon, started for real).
/// </summary>
public sealed class PackedFrontendCliTests
{
    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public async Task Verify_and_bench_run_over_packed_rings_against_our_back_end()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 4 << 20);
        using var serverDir = new TempDir();
        using (var file = BlkPeer.ExportFile(PeerKind.Vblk, serverDir, image))
        {
            var (code, output, error) = await Run(IoCommand.Create(), "--socket", file.SocketPath, "--packed", "info");
            Assert.True(code == 0, error);
            Assert.Contains("VIRTIO_F_RING_PACKED", output);
            (code, output, error) = await Run(IoCommand.Create(), "verify", "--packed", "--socket", file.SocketPath, "--offset", "512K", "--length", "3M", "--seed", "34");
            Assert.True(code == 0, error);
            Assert.Contains("OK", output);
            // The next connection may take split rings from the same back-end, and finds the data.
            (code, output, error) = await Run(IoCommand.Create(), "verify", "--socket", file.SocketPath, "--offset", "512K", "--length", "1M", "--seed", "35");
            Assert.True(code == 0, error);
            Assert.Contains("OK", output);
        }

        using var nullDir = new TempDir();
        using var peer = BlkPeer.ExportNull(PeerKind.Vblk, nullDir, 64 << 20, numQueues: 2);
        var (c, json, err) = await Run(BenchCommand.Create(), "--socket", peer.SocketPath, "--packed", "--rw", "randrw", "--bs", "4K",
            "--iodepth", "16", "--queues", "2", "--runtime", "0.5", "--ramp", "0", "--json");
        Assert.True(c == 0, err);
        using var doc = JsonDocument.Parse(json);
        Assert.True(doc.RootElement.GetProperty("total").GetProperty("ops").GetInt64() > 1000);
    }

    [Fact]
    public async Task Packed_is_refused_in_one_line_by_qemu_storage_daemon()
    {
        using var dir = new TempDir();
        var image = dir.File("disk.raw");
        FileBackend.Create(image, 1 << 20);
        using var qsd = BlkPeer.ExportFile(PeerKind.Qsd, dir, image);
        var (code, _, error) = await Run(IoCommand.Create(), "--socket", qsd.SocketPath, "--packed", "info");
        Assert.NotEqual(0, code);
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one line, got: {error}");
        Assert.Contains("does not offer VIRTIO_F_RING_PACKED", error);
        Assert.DoesNotContain(" at ", error);

        (code, _, error) = await Run(BenchCommand.Create(), "--socket", qsd.SocketPath, "--packed", "--runtime", "0.2", "--ramp", "0");
        Assert.NotEqual(0, code);
        Assert.Contains("does not offer VIRTIO_F_RING_PACKED", error);
        // Without --packed the same daemon serves split rings.
        (code, _, error) = await Run(IoCommand.Create(), "--socket", qsd.SocketPath, "info");
        Assert.True(code == 0, error);
    }
}
