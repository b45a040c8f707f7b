using System.Diagnostics;
using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Tests.VhostUser;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// The NBD backend against real servers started here (nbdkit, qemu-nbd): our driver writes
/// seeded patterns through vhost-user and the NBD backend, and qemu-img reads them back from the
/// server byte for byte; injected errors, latency and a killed server fail requests with IOERR
/// and serving goes on.
/// </summary>
public sealed class NbdBackendTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static byte[] Seeded(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    /// <summary>Many writes of random lengths in flight on every queue, then read back through us; returns the model of the disk's first <paramref name="span"/> bytes.</summary>
    private static async Task<byte[]> WriteAndVerify(BlkDriver driver, int span, int seed, int count = 192)
    {
        var model = new byte[span];
        var rng = new Random(seed);
        var chunk = span / count;
        var writes = new List<Task>();
        for (var i = 0; i < count; i++)
        {
            var data = Seeded(rng.Next(1, chunk / 512 + 1) * 512, seed * 1000 + i);
            data.CopyTo(model, i * chunk);
            writes.Add(driver.WriteAsync((ulong)(i * chunk), data).AsTask());
        }
        await Task.WhenAll(writes);
        await driver.FlushAsync();
        var reads = new List<Task>();
        for (var i = 0; i < count; i++)
        {
            var at = i * chunk;
            reads.Add(Task.Run(async () =>
            {
                var back = new byte[chunk];
                await driver.ReadAsync((ulong)at, back);
                Assert.True(model.AsSpan(at, chunk).SequenceEqual(back), $"bytes at {at} differ");
            }));
        }
        await Task.WhenAll(reads);
        return model;
    }

    [Theory]
    [InlineData(true, 1)]
    [InlineData(true, 2)]
    [InlineData(false, 2)]
    public async Task Seeded_writes_through_us_read_back_byte_for_byte_from_qemu_nbd(bool tcp, int connections)
    {
        const int span = 24 << 20;
        var image = _dir.File("disk.raw");
        FileBackend.Create(image, 32 << 20);
        using var server = NbdServer.QemuNbd(_dir, image, shared: 4, tcp: tcp);
        byte[] model;
        using (var rig = new NbdRig(_dir, server.Uri, new NbdOptions { Connections = connections }))
        {
            Assert.Equal(32UL << 20, rig.Backend.Capacity);
            Assert.Equal(connections, rig.Backend.Connections); // qemu-nbd --shared allows multi-conn
            Assert.True(rig.Backend.Export.Structured);
            model = await WriteAndVerify(rig.Driver, span, seed: 5);
            Assert.True(rig.Device.Stats.AsyncCompleted > 0);
            Assert.Equal(0, rig.Device.Stats.IoErrors);
        }
        var back = NbdServer.ReadBack(server.Uri, _dir);
        Assert.True(model.AsSpan().SequenceEqual(back.AsSpan(0, span)), "qemu-img read different bytes from the server");
        Assert.True(back.AsSpan(span).IndexOfAnyExcept((byte)0) < 0);
    }

    [Fact]
    public async Task Writes_trims_and_zeroes_land_in_a_qemu_nbd_export_and_read_back_with_qemu_img()
    {
        const int span = 8 << 20;
        var image = _dir.File("disk.raw");
        File.WriteAllBytes(image, new byte[16 << 20]);
        using (var f = File.OpenWrite(image))
        {
            f.Position = span;
            f.Write(Seeded(8 << 20, 99));
        }
        using var server = NbdServer.QemuNbd(_dir, image, shared: 4);
        byte[] model;
        using (var rig = new NbdRig(_dir, server.Uri, new NbdOptions { Connections = 2 }))
        {
            Assert.True(rig.Backend.SupportsDiscard && rig.Backend.SupportsWriteZeroes);
            model = await WriteAndVerify(rig.Driver, span, seed: 8, count: 64);
            await rig.Driver.WriteZeroesAsync(1 << 20, 256 << 10);
            await rig.Driver.WriteZeroesAsync(3 << 20, 64 << 10, mayUnmap: true);
            Array.Clear(model, 1 << 20, 256 << 10);
            Array.Clear(model, 3 << 20, 64 << 10);
            await rig.Driver.FlushAsync();
        }
        var back = NbdServer.ReadBack(server.Uri, _dir);
        Assert.True(model.AsSpan().SequenceEqual(back.AsSpan(0, span)), "qemu-img read different bytes from qemu-nbd");
        Assert.True(back.AsSpan(span).SequenceEqual(Seeded(8 << 20, 99)), "bytes beyond the written range changed");
    }

    [Fact]
    public async Task A_server_killed_under_load_fails_requests_with_IOERR_and_a_restarted_one_is_used_again()
    {
        var server = NbdServer.Nbdkit(_dir, false, "memory", "64M");
        try
        {
            using var rig = new NbdRig(_dir, server.Uri);
            var failed = 0;
            using var stop = new CancellationTokenSource();
            var load = Enumerable.Range(0, 32).Select(w => Task.Run(async () =>
            {
                var buffer = new byte[16384];
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    try
                    {
                        if (i % 2 == 0)
                            await rig.Driver.WriteAsync((ulong)((w * 97 + i) % 4000) * 16384, buffer);
                        else
                            await rig.Driver.ReadAsync((ulong)((w * 31 + i) % 4000) * 16384, buffer);
                    }
                    catch (BlkException e) when (e.Status == BlkStatus.IoErr)
                    {
                        Interlocked.Increment(ref failed);
                    }
                }
            })).ToArray();
            await Task.Delay(500);
            server.Kill();
            await Task.Delay(1000);
            stop.Cancel();
            await Task.WhenAll(load).WaitAsync(TimeSpan.FromSeconds(30)); // nothing hangs
            Assert.True(failed > 0);
            Assert.True(rig.Server.IsConnected);

            server.Dispose();
            server = NbdServer.Restart(server, "memory", "64M");
            await Task.Delay(1100);
            var data = Seeded(8192, 6);
            await rig.Driver.WriteAsync(4096, data);
            var back = new byte[8192];
            await rig.Driver.ReadAsync(4096, back);
            Assert.Equal(data, back);
        }
        finally
        {
            server.Dispose();
        }
    }

    [Fact]
    public void A_refused_export_and_an_unreachable_server_are_one_clear_line_at_start()
    {
        var image = _dir.File("disk.raw");
        File.WriteAllBytes(image, new byte[1 << 20]);
        using var server = NbdServer.QemuNbd(_dir, image, shared: 1, export: "disk");
        var wrong = server.Uri.Replace("///disk?", "///nope?", StringComparison.Ordinal);
        var e = Assert.Throws<NbdException>(() => NbdBackend.Open(NbdUri.Parse(wrong)));
        Assert.Contains("refused export 'nope'", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);

        var gone = Assert.Throws<NbdException>(() => NbdBackend.Open(NbdUri.Parse($"nbd+unix:///x?socket={_dir.File("none.sock")}")));
        Assert.Contains("cannot connect", gone.Message, StringComparison.Ordinal);
        var port = NbdServer.FreePort();
        var tcp = Assert.Throws<NbdException>(() => NbdBackend.Open(NbdUri.Parse($"nbd://127.0.0.1:{port}/x")));
        Assert.Contains("cannot connect", tcp.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("nbd://example.org/disk", "example.org", 10809, null, "disk")]
    [InlineData("nbd://10.0.0.1:10810/", "10.0.0.1", 10810, null, "")]
    [InlineData("nbd://[::1]:99/a%20b", "::1", 99, null, "a b")]
    [InlineData("nbd+unix:///vm1?socket=/run/nbd.sock", null, 0, "/run/nbd.sock", "vm1")]
    [InlineData("nbd+unix:///?socket=%2Ftmp%2Fs", null, 0, "/tmp/s", "")]
    public void NBD_URIs_of_uri_md_parse(string text, string? host, int port, string? socket, string export)
    {
        var u = NbdUri.Parse(text);
        Assert.Equal((host, port, socket, export), (u.Host, u.Port, u.SocketPath, u.Export));
    }

    [Theory]
    [InlineData("nbd:/disk", "not an NBD URI")]
    [InlineData("nbds://h/e", "TLS")]
    [InlineData("nbd+unix:///e", "needs ?socket=PATH")]
    [InlineData("nbd+unix://host/e?socket=/s", "takes no host")]
    [InlineData("nbd://h:0/e", "bad port")]
    [InlineData("nbd://h:99999/e", "bad port")]
    [InlineData("nbd:///e", "no host")]
    [InlineData("nbd://h/e?socket=/s", "belongs to nbd+unix")]
    [InlineData("ftp://h/e", "unknown scheme")]
    public void Malformed_NBD_URIs_are_refused_with_a_reason(string text, string reason)
    {
        var e = Assert.Throws<FormatException>(() => NbdUri.Parse(text));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
    }
}
