using System.CommandLine;
using VirtioSharp.Cli.Commands;
using VirtioSharp.Cli.Frontend;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Rbd;

/// <summary>
/// <c>vblk serve rbd:...</c> against a real single-node Ceph cluster: what our front-end writes
/// through it, Ceph's own <c>rbd export</c> reads back byte for byte; snapshots are read-only;
/// bad inputs are one line; an OSD that goes away makes requests fail after the I/O timeout and
/// the back-end serves again once it is back.
/// </summary>
[Trait("Category", "Ceph")]
public sealed class RbdServeTests(CephCluster ceph) : IClassFixture<CephCluster>
{
    private const int MiB = 1 << 20;

    private BackgroundProcess Serve(TempDir dir, string image, params string[] extra)
    {
        var socket = dir.File("vblk.sock");
        var server = new BackgroundProcess("dotnet", [Repo.VblkDll, "serve", image, "--ceph-conf", ceph.Conf, "--socket", socket, .. extra]);
        server.WaitForSocket(socket, TimeSpan.FromSeconds(60)); // the socket file appears once it listens
        return server;
    }

    private static async Task<(int Code, string Out, string Err)> Run(Command command, params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await command.Parse(args).InvokeAsync(new InvocationConfiguration { Output = stdout, Error = stderr });
        return (code, stdout.ToString(), stderr.ToString());
    }

    private static async Task Io(TempDir dir, params string[] args)
    {
        var (code, output, error) = await Run(IoCommand.Create(), ["--socket", dir.File("vblk.sock"), .. args]);
        Assert.True(code == 0, $"vblk io {string.Join(' ', args)}: exit {code}\n{output}{error}");
    }

    private static byte[] Pattern(long offset, int length, ulong seed)
    {
        var bytes = new byte[length];
        SeededPattern.Fill(bytes, (ulong)offset, seed);
        return bytes;
    }

    private static void AssertSameBytes(ReadOnlySpan<byte> expected, ReadOnlySpan<byte> actual, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes, expected {expected.Length}");
        var at = expected.CommonPrefixLength(actual);
        if (at != expected.Length)
            Assert.Fail($"{what}: first difference at byte {at} (0x{at:x}): {actual[at]:x2}, expected {expected[at]:x2}");
    }

    private static void AssertStopped(BackgroundProcess server)
    {
        var code = server.Stop(TimeSpan.FromSeconds(60));
        Assert.True(code == 0, $"vblk serve exited with {code}\n{server.Output}");
    }

    [Fact]
    public async Task Patterns_discard_and_write_zeroes_through_vblk_serve_read_back_byte_for_byte_through_rbd_export()
    {
        var image = ceph.CreateImage("patterns", 64L * MiB);
        using var dir = new TempDir();
        var expected = new byte[64 * MiB];
        using (var server = Serve(dir, $"rbd:rbd/{image}", "--num-queues", "2"))
        {
            await Io(dir, "verify", "--offset", "1M", "--length", "3M", "--seed", "5");
            await Io(dir, "verify", "--offset", "40M", "--length", "2M", "--seed", "6");
            await Io(dir, "verify", "--offset", "63M", "--length", "1M", "--seed", "7");
            Pattern(1 * MiB, 3 * MiB, 5).CopyTo(expected, 1 * MiB);
            Pattern(40 * MiB, 2 * MiB, 6).CopyTo(expected, 40 * MiB);
            Pattern(63 * MiB, 1 * MiB, 7).CopyTo(expected, 63 * MiB);
            // A small discard reads back zeroes with rbd_skip_partial_discard off (the cluster's
            // client section); write-zeroes always does.
            await Io(dir, "discard", "--offset", $"{2 * MiB + 4096}", "--length", "4K");
            await Io(dir, "discard", "--offset", "41M", "--length", "256K");
            await Io(dir, "write-zeroes", "--offset", $"{40 * MiB + 8192}", "--length", "12K");
            Array.Clear(expected, 2 * MiB + 4096, 4096);
            Array.Clear(expected, 41 * MiB, 256 << 10);
            Array.Clear(expected, 40 * MiB + 8192, 12 << 10);
            await Io(dir, "flush");
            AssertStopped(server);
            Assert.Contains("librbd requests asynchronous", server.Output);
        }
        AssertSameBytes(expected, ceph.Export(image), "rbd export of the image");
    }

    [Fact]
    public async Task A_snapshot_is_served_read_only_with_the_bytes_it_was_taken_with()
    {
        var image = ceph.CreateImage("snapped", 8L * MiB);
        using var dir = new TempDir();
        using (var server = Serve(dir, $"rbd:rbd/{image}"))
        {
            await Io(dir, "verify", "--offset", "0", "--length", "1M", "--seed", "21");
            AssertStopped(server);
        }
        ceph.Rbd("snap", "create", $"rbd/{image}@before");
        using (var server = Serve(dir, $"rbd:rbd/{image}"))
        {
            await Io(dir, "verify", "--offset", "0", "--length", "1M", "--seed", "22");
            AssertStopped(server);
        }
        using (var server = Serve(dir, $"rbd:rbd/{image}@before"))
        {
            var (code, output, error) = await Run(IoCommand.Create(), "--socket", dir.File("vblk.sock"), "info");
            Assert.True(code == 0, error);
            Assert.Matches(@"read-only\s+yes", output);
            var copy = dir.File("snap.bin");
            await Io(dir, "read", "--offset", "0", "--length", "1M", "--out", copy);
            AssertSameBytes(Pattern(0, MiB, 21), File.ReadAllBytes(copy), "the snapshot read through vblk serve");
            var input = dir.File("in.bin");
            File.WriteAllBytes(input, new byte[4096]);
            (code, _, error) = await Run(IoCommand.Create(), "--socket", dir.File("vblk.sock"), "write", "--offset", "0", "--in", input);
            Assert.NotEqual(0, code);
            Assert.Single(error.Trim().Split('\n'));
            AssertStopped(server);
            Assert.Contains("read-only", server.Output);
        }
        using (var server = Serve(dir, $"rbd:rbd/{image}", "--read-only"))
        {
            var (code, output, error) = await Run(IoCommand.Create(), "--socket", dir.File("vblk.sock"), "info");
            Assert.True(code == 0, error);
            Assert.Matches(@"read-only\s+yes", output);
            AssertStopped(server);
        }
        AssertSameBytes(Pattern(0, MiB, 21), ceph.Export($"{image}@before").AsSpan(0, MiB), "rbd export of the snapshot");
        AssertSameBytes(Pattern(0, MiB, 22), ceph.Export(image).AsSpan(0, MiB), "rbd export of the image");
    }

    [Fact]
    public async Task A_resize_under_a_running_back_end_is_noticed_and_logged()
    {
        var image = ceph.CreateImage("growing", 8L * MiB);
        using var dir = new TempDir();
        using var server = Serve(dir, $"rbd:rbd/{image}");
        ceph.Rbd("resize", "--size", "12M", $"rbd/{image}");
        var deadline = Environment.TickCount64 + 30_000; // the header watch fires at once; the poll every 10 s
        while (!server.Output.Contains("was resized", StringComparison.Ordinal) && Environment.TickCount64 < deadline)
            await Task.Delay(100);
        Assert.Contains($"rbd rbd/{image} was resized from {8 * MiB} to {12 * MiB} bytes", server.Output);
        // The device's configuration follows at once: a front-end that connects now reads the new capacity.
        Assert.Contains($"capacity is now {12 * MiB / 512} sectors", server.Output);
        var (code, output, error) = await Run(IoCommand.Create(), "--socket", dir.File("vblk.sock"), "info");
        Assert.True(code == 0, error);
        Assert.Contains($"capacity          {12 * MiB} bytes", output);
        AssertStopped(server);
    }

    [Fact]
    public void Bad_images_keys_and_clusters_are_one_line_and_exit_2()
    {
        var image = ceph.CreateImage("present", 4L * MiB);
        using var dir = new TempDir();
        var conf = File.ReadAllText(ceph.Conf);
        // A keyring whose key for client.admin is someone else's.
        var wrongKeyring = dir.File("wrong.keyring");
        File.WriteAllText(wrongKeyring, "[client.admin]\n\tkey = AQBNu01nAAAAABAAq6xPqKMBSlHvZ0LnS5yX7A==\n");
        var wrongKey = dir.File("wrong-key.conf");
        File.WriteAllText(wrongKey, System.Text.RegularExpressions.Regex.Replace(conf, @"(?m)^keyring = .*$", $"keyring = {wrongKeyring}"));
        // Monitors nobody answers for: a port with no listener.
        var noMonitors = dir.File("no-monitors.conf");
        File.WriteAllText(noMonitors, System.Text.RegularExpressions.Regex.Replace(conf, @"(?m)^mon host = .*$", "mon host = [v2:127.0.0.1:1]"));

        (string[] Args, string Message)[] cases =
        [
            (["rbd:nopool/disk"], "pool 'nopool' does not exist"),
            ([$"rbd:rbd/absent"], "image 'absent' does not exist in pool 'rbd'"),
            ([$"rbd:rbd/{image}@nosnap"], $"image '{image}' in pool 'rbd' has no snapshot 'nosnap'"),
            (["rbd:rbd"], "names no pool"),
            ([$"rbd:rbd/{image}@"], "malformed snapshot name"),
            ([$"rbd:rbd/{image}", "--ceph-conf", wrongKey], "refused client.admin: wrong key or no such user"),
            ([$"rbd:rbd/{image}", "--ceph-id", "nobody"], "refused client.nobody: wrong key or no such user"),
            ([$"rbd:rbd/{image}", "--ceph-conf", noMonitors, "--ceph-connect-timeout", "1"], "no answer from the Ceph monitors ([v2:127.0.0.1:1]) within 1 s"),
            ([$"rbd:rbd/{image}", "--ceph-conf", dir.File("absent.conf")], "does not exist"),
            ([$"rbd:rbd/{image}", "--backend", "memory"], "takes no IMAGE"),
        ];
        foreach (var (args, message) in cases)
        {
            string[] confArgs = args.Contains("--ceph-conf") ? [] : ["--ceph-conf", ceph.Conf];
            var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "serve", "--socket", dir.File("never.sock"), .. confArgs, .. args],
                TimeSpan.FromSeconds(60));
            var lines = output.Trim().Split('\n');
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}\n{output}");
            Assert.True(lines.Length == 1 && lines[0].StartsWith("vblk serve: ", StringComparison.Ordinal) && lines[0].Contains(message, StringComparison.Ordinal),
                $"{string.Join(' ', args)}: expected one line with \"{message}\", got:\n{output}");
            Assert.False(File.Exists(dir.File("never.sock")));
        }
    }

    [Fact]
    public async Task An_OSD_that_goes_away_under_load_fails_requests_after_the_timeout_and_the_back_end_serves_again_when_it_returns()
    {
        var image = ceph.CreateImage("fault", 32L * MiB);
        using var dir = new TempDir();
        using var server = Serve(dir, $"rbd:rbd/{image}", "--ceph-io-timeout", "3", "--num-queues", "2");
        await Io(dir, "verify", "--offset", "16M", "--length", "1M", "--seed", "31");

        // Load on both queues over [0, 8) MiB while the OSD stops, stays away, and comes back.
        var bench = Run(BenchCommand.Create(), "--socket", dir.File("vblk.sock"), "--rw", "randrw", "--bs", "4K", "--iodepth", "8",
            "--queues", "2", "--size", "8M", "--runtime", "25", "--ramp", "0");
        await Task.Delay(2000);
        ceph.StopOsd();
        await Task.Delay(6000); // twice the timeout: requests started now must fail, not hang
        Assert.False(server.HasExited, server.Output);
        ceph.StartOsd();
        var (code, output, error) = await bench;

        // Requests failed with an error status (VIRTIO_BLK_S_IOERR) while the OSD was away ...
        Assert.True(code != 0 && error.Contains("requests completed with an error status", StringComparison.Ordinal), $"bench: exit {code}\n{output}{error}");
        // ... and the same process serves again once it is back, with the data written before.
        Assert.False(server.HasExited, server.Output);
        var before = dir.File("before.bin");
        await Io(dir, "read", "--offset", "16M", "--length", "1M", "--out", before);
        AssertSameBytes(Pattern(16 * MiB, MiB, 31), File.ReadAllBytes(before), "data written before the OSD went away");
        await Io(dir, "verify", "--offset", "20M", "--length", "1M", "--seed", "32");
        AssertStopped(server);
        Assert.Matches(@"served \d+ requests: .* [1-9]\d* I/O errors", server.Output);
        AssertSameBytes(Pattern(20 * MiB, MiB, 32), ceph.Export(image).AsSpan(20 * MiB, MiB), "rbd export after the OSD returned");
    }
}
