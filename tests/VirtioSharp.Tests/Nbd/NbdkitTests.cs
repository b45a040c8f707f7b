using VirtioSharp.Block;
using VirtioSharp.Cli.Frontend;
using VirtioSharp.Tests.Support;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// <c>vblk serve nbd+unix:///...</c> as its own process in front of nbdkit: seeded patterns written
/// through it into <c>nbdkit memory</c> read back byte for byte through <c>qemu-img convert</c>
/// from nbdkit; nbdkit's <c>error</c> filter fails requests (IOERR at our front-end, the
/// processes keep serving, the requests after them succeed); its <c>delay</c> filter holds
/// replies past <c>--nbd-timeout</c>.
/// </summary>
public sealed class NbdkitTests : IDisposable
{
    private const int MiB = 1 << 20;
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private static byte[] Pattern(long offset, int length, ulong seed)
    {
        var bytes = new byte[length];
        SeededPattern.Fill(bytes, (ulong)offset, seed);
        return bytes;
    }

    private static void AssertSameBytes(ReadOnlyMemory<byte> expectedBytes, ReadOnlyMemory<byte> actualBytes, string what)
    {
        var expected = expectedBytes.Span;
        var actual = actualBytes.Span;
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} bytes, expected {expected.Length}");
        var at = expected.CommonPrefixLength(actual);
        if (at != expected.Length)
            Assert.Fail($"{what}: first difference at byte {at} (0x{at:x}): {actual[at]:x2}, expected {expected[at]:x2}");
    }

    private static void AssertStopped(BackgroundProcess serve)
    {
        var code = serve.Stop(TimeSpan.FromSeconds(60));
        Assert.True(code == 0, $"vblk serve exited with {code}\n{serve.Output}");
    }

    /// <summary>Writes <paramref name="count"/> pieces of the seeded pattern over [offset, offset + count * piece), all in flight at once.</summary>
    private static Task WriteAll(BlkDriver driver, long offset, int count, int piece, ulong seed) =>
        Task.WhenAll(Enumerable.Range(0, count).Select(i =>
        {
            var at = offset + (long)i * piece;
            return driver.WriteAsync((ulong)at, Pattern(at, piece, seed)).AsTask();
        }));

    private static async Task<byte[]> Read(BlkDriver driver, long offset, int length)
    {
        var back = new byte[length];
        await driver.ReadAsync((ulong)offset, back);
        return back;
    }

    /// <summary>Runs <paramref name="count"/> requests at once; returns how many failed with IOERR (anything else fails the test).</summary>
    private static async Task<int> IoErrors(int count, Func<int, Task> request)
    {
        var failed = 0;
        await Task.WhenAll(Enumerable.Range(0, count).Select(async i =>
        {
            try
            {
                await request(i);
            }
            catch (BlkException e) when (e.Status == BlkStatus.IoErr)
            {
                Interlocked.Increment(ref failed);
            }
        })).WaitAsync(TimeSpan.FromSeconds(60));
        return failed;
    }

    [Fact]
    public async Task Seeded_writes_through_vblk_serve_read_back_byte_for_byte_from_nbdkit_memory()
    {
        using var nbdkit = NbdServer.Nbdkit(_dir, false, "memory", "64M");
        var expected = new byte[64 * MiB];
        var socket = _dir.File("vblk.sock");
        using (var serve = VblkServe.Start(socket, nbdkit.Uri, "--num-queues", "2", "--nbd-connections", "2"))
        {
            using (var session = FrontendSession.Open(socket, queues: 2))
            {
                var driver = session.Driver;
                Assert.Equal(64UL * MiB, driver.Capacity);
                await WriteAll(driver, 0, 64, 16384, seed: 3);                  // [0, 1M) in 16 KiB pieces
                await WriteAll(driver, 5 * MiB, 6, MiB / 2, seed: 4);           // [5M, 8M) in 512 KiB pieces
                await WriteAll(driver, 63 * MiB + 512, 1, MiB - 512, seed: 5);  // up to the last byte
                Pattern(0, MiB, 3).CopyTo(expected, 0);
                Pattern(5 * MiB, 3 * MiB, 4).CopyTo(expected, 5 * MiB);
                Pattern(63 * MiB + 512, MiB - 512, 5).CopyTo(expected, 63 * MiB + 512);
                await driver.DiscardAsync(5 * MiB + 4096, 64 << 10);
                await driver.WriteZeroesAsync(6 * MiB + 512, 3584);
                await driver.WriteZeroesAsync(7 * MiB, 256 << 10, mayUnmap: true);
                Array.Clear(expected, 5 * MiB + 4096, 64 << 10); // nbdkit memory: trimmed bytes read back as zeroes
                Array.Clear(expected, 6 * MiB + 512, 3584);
                Array.Clear(expected, 7 * MiB, 256 << 10);
                await driver.FlushAsync();
                AssertSameBytes(expected.AsMemory(5 * MiB, 3 * MiB), await Read(driver, 5 * MiB, 3 * MiB), "read back through vblk serve");
            }
            AssertStopped(serve);
            Assert.Contains("over 2 NBD connections", serve.Output);
            Assert.Matches(@"served \d+ requests: .*? 0 I/O errors", serve.Output);
        }
        Assert.False(nbdkit.HasExited, $"nbdkit exited: {nbdkit.Errors}");
        AssertSameBytes(expected, NbdServer.ReadBack(nbdkit.Uri, _dir), "qemu-img convert from nbdkit memory");
    }

    [Fact]
    public async Task Errors_injected_by_nbdkit_fail_requests_with_IOERR_and_the_requests_after_them_succeed()
    {
        // While W exists every write, trim and zero fails in nbdkit; while R exists every read does.
        var failWrites = _dir.File("fail-writes");
        var failReads = _dir.File("fail-reads");
        using var nbdkit = NbdServer.Nbdkit(_dir, false, "--filter=error", "memory", "16M",
            "error-pwrite-rate=100%", $"error-pwrite-file={failWrites}", "error-trim-rate=100%", $"error-trim-file={failWrites}",
            "error-zero-rate=100%", $"error-zero-file={failWrites}", "error-pread-rate=100%", $"error-pread-file={failReads}");
        var socket = _dir.File("vblk.sock");
        using var serve = VblkServe.Start(socket, nbdkit.Uri, "--num-queues", "2");
        using (var session = FrontendSession.Open(socket, queues: 2))
        {
            var driver = session.Driver;
            await WriteAll(driver, 0, 16, 65536, seed: 11);
            await driver.FlushAsync();

            File.WriteAllBytes(failWrites, []);
            Assert.Equal(16, await IoErrors(16, i => driver.WriteAsync((ulong)i * 65536, Pattern(i * 65536L, 65536, 12)).AsTask()));
            Assert.Equal(2, await IoErrors(2, i => i == 0 ? driver.DiscardAsync(0, 65536).AsTask() : driver.WriteZeroesAsync(65536, 4096).AsTask()));
            // Reads are untouched and see none of the failed writes.
            AssertSameBytes(Pattern(0, MiB, 11), await Read(driver, 0, MiB), "reads while writes fail");

            File.Delete(failWrites);
            File.WriteAllBytes(failReads, []);
            Assert.Equal(8, await IoErrors(8, i => Read(driver, i * 65536L, 65536)));
            await WriteAll(driver, MiB, 8, 32768, seed: 13); // writes go on meanwhile

            File.Delete(failReads);
            AssertSameBytes(Pattern(0, MiB, 11), await Read(driver, 0, MiB), "reads after the injected failures");
            AssertSameBytes(Pattern(MiB, 256 << 10, 13), await Read(driver, MiB, 256 << 10), "writes made while reads failed");
        }
        Assert.False(serve.HasExited, serve.Output);
        Assert.False(nbdkit.HasExited, $"nbdkit exited: {nbdkit.Errors}");
        Assert.Contains("injecting EIO error", nbdkit.Errors, StringComparison.Ordinal);
        AssertStopped(serve);
        // An NBD error fails its request only: the connection stays up. 16 + 2 + 8 requests of at most 64 KiB failed.
        Assert.DoesNotContain("connection lost", serve.Output, StringComparison.Ordinal);
        Assert.Matches(@"served \d+ requests: .*? 26 I/O errors", serve.Output);
        var image = NbdServer.ReadBack(nbdkit.Uri, _dir);
        AssertSameBytes(Pattern(0, MiB, 11), image.AsMemory(0, MiB), "qemu-img convert after the injected failures");
        AssertSameBytes(Pattern(MiB, 256 << 10, 13), image.AsMemory(MiB, 256 << 10), "qemu-img convert of the later writes");
    }

    [Fact]
    public async Task A_server_slower_than_the_NBD_timeout_fails_reads_with_IOERR_and_writes_go_on_over_a_new_connection()
    {
        var image = _dir.File("disk.raw");
        File.WriteAllBytes(image, new byte[MiB]);
        using var nbdkit = NbdServer.Nbdkit(_dir, false, "--filter=delay", "file", image, "rdelay=4");
        var socket = _dir.File("vblk.sock");
        using var serve = VblkServe.Start(socket, nbdkit.Uri, "--nbd-timeout", "1");
        using (var session = FrontendSession.Open(socket))
        {
            var driver = session.Driver;
            var started = Environment.TickCount64;
            Assert.Equal(4, await IoErrors(4, i => Read(driver, i * 4096L, 4096)));
            var waited = Environment.TickCount64 - started;
            Assert.True(waited >= 1000, $"the reads failed after {waited} ms, before the 1 s timeout");
            // The next requests reconnect (at most once a second) and go through. The 1 s timeout
            // holds for them too: on a loaded host a write's or a flush's reply (the flush is an
            // fdatasync behind nbdkit) can itself take longer than that, and then that connection
            // ends as well and the request fails with IOERR. So the write and the flush are
            // retried together, until both have gone through on one connection.
            var deadline = Environment.TickCount64 + 20_000;
            var failures = new List<string>();
            while (true)
            {
                try
                {
                    await driver.WriteAsync(8192, Pattern(8192, 8192, 21));
                    await driver.FlushAsync();
                    break;
                }
                catch (BlkException e) when (e.Status == BlkStatus.IoErr)
                {
                    failures.Add($"{e.Message} after {Environment.TickCount64 - started} ms");
                    Assert.True(Environment.TickCount64 < deadline, $"no write and flush went through within 20 s of the reads' failure: {string.Join("; ", failures)}\n{serve.Output}");
                    await Task.Delay(200);
                }
            }
        }
        AssertStopped(serve);
        Assert.Contains("no reply within 1 s", serve.Output, StringComparison.Ordinal);
        Assert.Contains("re-established", serve.Output, StringComparison.Ordinal);
        Assert.False(nbdkit.HasExited, $"nbdkit exited: {nbdkit.Errors}");
        AssertSameBytes(Pattern(8192, 8192, 21), File.ReadAllBytes(image).AsMemory(8192, 8192), "the file behind nbdkit, after the write made after the timeout");
    }

    [Fact]
    public void An_nbdkit_started_by_a_thread_that_ends_keeps_serving()
    {
        NbdServer? server = null;
        var starter = new Thread(() => server = NbdServer.Nbdkit(_dir, false, "memory", "1M"));
        starter.Start();
        starter.Join();
        using (server)
        {
            Thread.Sleep(500);
            Assert.False(server!.HasExited, $"nbdkit stopped after the thread that started it ended: {server.Errors}");
            using var backend = VirtioSharp.Block.Nbd.NbdBackend.Open(VirtioSharp.Block.Nbd.NbdUri.Parse(server.Uri));
            Assert.Equal(1UL * MiB, backend.Capacity);
        }
    }
}
