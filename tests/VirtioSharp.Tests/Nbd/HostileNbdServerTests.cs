using System.Net.Sockets;
using System.Runtime.CompilerServices;
using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Tests.VhostUser;
using VirtioSharp.Tests.Vm;
using static VirtioSharp.Tests.Nbd.FakeNbdPeer;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// The NBD client against a server that breaks the protocol on purpose (<see cref="FakeNbdServer"/>).
/// At start: one clear line, within the connect timeout. At run time: the request fails with EIO
/// within the request timeout, no byte outside the request's buffers changes (guard pages and a
/// gap between the two pieces of each read), and the next request is served over a new
/// connection by a server that behaves.
/// </summary>
public sealed class HostileNbdServerTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20); // far above every timeout below: reaching it is a hang
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string SocketPath() => _dir.File($"fake-{Guid.NewGuid():N}"[..13] + ".sock");

    // Short enough to keep the tests quick, long enough for a loaded machine to schedule the fake server.
    private static NbdOptions Options(ListLogSink log, int connectSeconds = 10) => new()
    {
        Timeout = TimeSpan.FromSeconds(2),
        ConnectTimeout = TimeSpan.FromSeconds(connectSeconds),
        Log = log,
    };

    private static string Lines(ListLogSink log) => string.Join('\n', log.Lines.Select(l => $"{l.Level}: {l.Message}"));

    // ---------------- transmission ----------------

    /// <summary>What the first connection does with the first request (a 4 KiB read at 8 KiB, in two iovecs).</summary>
    private static void Misbehave(string scenario, FakeNbdPeer peer, NbdRequest r)
    {
        switch (scenario)
        {
            case "short reply, then hang up":
                peer.Send(ChunkHeader(ChunkDone, ChunkData, r.Cookie, 4104)[..8]);
                peer.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
                return;
            case "short reply, then silence":
                peer.Send(ChunkHeader(ChunkDone, ChunkData, r.Cookie, 4104)[..8]);
                peer.Silence();
                return;
            case "reply trickled a byte at a time":
                foreach (var b in DataChunk(ChunkDone, r.Cookie, r.Offset, (int)r.Length))
                {
                    peer.Send([b]);
                    Thread.Sleep(50);
                }
                return;
            case "another generation of the cookie":
                peer.Send(DataChunk(ChunkDone, r.Cookie ^ (1UL << 32), r.Offset, (int)r.Length));
                break;
            case "a cookie never sent":
                peer.Send(DataChunk(ChunkDone, ulong.MaxValue, r.Offset, (int)r.Length));
                break;
            case "a chunk of 1 GiB":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkData, r.Cookie, (1u << 30) + 8), Be64(r.Offset), Enumerable.Repeat((byte)0xEE, 65536).ToArray()));
                break;
            case "data past the end of the read":
                peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset + 2048, (int)r.Length));
                break;
            case "data before the start of the read":
                peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset - 512, 1024));
                break;
            case "an offset that wraps around":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkData, r.Cookie, 1032), Be64(ulong.MaxValue - 511), new byte[1024]));
                break;
            case "a hole past the end of the read":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkHole, r.Cookie, 12), Be64(r.Offset + 3584), Be32(1024)));
                break;
            case "a hole of 4 GiB":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkHole, r.Cookie, 12), Be64(r.Offset), Be32(uint.MaxValue)));
                break;
            case "an error message longer than its chunk":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkError, r.Cookie, 10), Be32(5), Be16(3000), new byte[4]));
                break;
            case "an error offset past the end of the read":
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkErrorOffset, r.Cookie, 14), Be32(5), Be16(0), Be64(r.Offset + r.Length)));
                break;
            case "a simple reply to a structured read":
                peer.Send(Cat(SimpleReply(r.Cookie), Contents(r.Offset, (int)r.Length)));
                break;
            case "a reply with a bad magic":
                peer.Send(Enumerable.Repeat((byte)0x42, 20).ToArray());
                break;
            case "a block-status chunk to a read":
                peer.Send(ChunkHeader(ChunkDone, 5, r.Cookie, 0));
                break;
            case "done after half the data":
                peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset, 2048));
                peer.ServeRequests(); // a failed read, not a broken stream: the connection goes on
                return;
            case "the first half twice, the second half never":
                peer.Send(DataChunk(0, r.Cookie, r.Offset, 2048));
                peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset, 2048));
                peer.ServeRequests();
                return;
            case "a hole over data already sent, a gap after it":
                peer.Send(DataChunk(0, r.Cookie, r.Offset, 3072));
                peer.Send(HoleChunk(ChunkDone, r.Cookie, r.Offset + 2048, 1024));
                peer.ServeRequests();
                return;
            case "out of order and overlapping, a gap at the start":
                peer.Send(DataChunk(0, r.Cookie, r.Offset + 2048, 2048));
                peer.Send(HoleChunk(0, r.Cookie, r.Offset + 1024, 1536));
                peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset + 2560, 512));
                peer.ServeRequests();
                return;
            case "an error chunk":
                var message = "the disk is on fire"u8.ToArray();
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkError, r.Cookie, 6 + (uint)message.Length), Be32(5), Be16((ushort)message.Length), message));
                peer.ServeRequests();
                return;
            default:
                throw new ArgumentException(scenario);
        }
        peer.DrainUntilClosed();
    }

    [Theory]
    [InlineData("short reply, then hang up", "the server closed the connection")]
    [InlineData("short reply, then silence", "no reply within 2 s")]
    [InlineData("reply trickled a byte at a time", "no reply within 2 s")]
    [InlineData("another generation of the cookie", "which is not in flight")]
    [InlineData("a cookie never sent", "which is not in flight")]
    [InlineData("a chunk of 1 GiB", "outside the read")]
    [InlineData("data past the end of the read", "outside the read")]
    [InlineData("data before the start of the read", "outside the read")]
    [InlineData("an offset that wraps around", "outside the read")]
    [InlineData("a hole past the end of the read", "outside the read")]
    [InlineData("a hole of 4 GiB", "outside the read")]
    [InlineData("an error message longer than its chunk", "does not fit")]
    [InlineData("an error offset past the end of the read", "an error offset 12288 outside the Read at 8192 + 4096")]
    [InlineData("a simple reply to a structured read", "a simple reply to a read")]
    [InlineData("a reply with a bad magic", "reply magic 0x42424242")]
    [InlineData("a block-status chunk to a read", "unknown reply chunk type 5")]
    [InlineData("done after half the data", null)]
    [InlineData("an error chunk", null)]
    public async Task A_hostile_reply_fails_the_read_with_EIO_touches_nothing_outside_its_buffers_and_serving_goes_on(string scenario, string? reason)
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                Misbehave(scenario, peer, peer.ReadRequest());
            }
        : peer => peer.Serve());
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(2048, 2048);
        var ok = await Task.Run(() => backend.Read(8192, buffer.Iov)).WaitAsync(Bound);
        Assert.False(ok, $"{scenario}: the read succeeded\n{Lines(log)}");
        Assert.Equal(-1, buffer.FirstChangedOutside());
        if (reason is null)
            Assert.False(log.Contains("connection lost"), $"{scenario}: an NBD error ended the connection\n{Lines(log)}");
        else
            Assert.True(log.Contains(reason), $"{scenario}: expected \"{reason}\" in the log\n{Lines(log)}");
        Assert.All(log.Lines, l => Assert.DoesNotContain('\n', l.Message));

        // The next request is served (over a new connection if the first one broke).
        using var again = new GuardedBuffer(1024, 3072);
        Assert.True(await Task.Run(() => backend.Read(12288, again.Iov)).WaitAsync(Bound), Lines(log));
        Assert.Equal(Contents(12288, 4096), again.Data);
        Assert.Equal(-1, again.FirstChangedOutside());
        Assert.Equal(reason is null ? 1 : 2, server.Accepted);
    }

    [Theory]
    [InlineData("the first half twice, the second half never", "MUST NOT overlap")]
    [InlineData("a hole over data already sent, a gap after it", "MUST NOT overlap")]
    [InlineData("out of order and overlapping, a gap at the start", "MUST NOT overlap")]
    [InlineData("done after half the data", "without covering the whole read")]
    public async Task Chunks_that_overlap_or_leave_a_gap_fail_the_read_with_one_line_naming_the_rule_and_the_connection_goes_on(string scenario, string rule)
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                Misbehave(scenario, peer, peer.ReadRequest());
            }
        : peer => peer.Serve());
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(2048, 2048);
        Assert.False(await Task.Run(() => backend.Read(8192, buffer.Iov)).WaitAsync(Bound), $"{scenario}: the read succeeded\n{Lines(log)}");
        Assert.Equal(-1, buffer.FirstChangedOutside());
        var lines = log.Lines.Where(l => l.Message.Contains(rule, StringComparison.Ordinal)).ToArray();
        Assert.True(lines is [{ Level: LogLevel.Warning }], $"{scenario}: expected one warning with \"{rule}\"\n{Lines(log)}");
        Assert.Contains("read at 8192 + 4096 failed", lines[0].Message, StringComparison.Ordinal);
        Assert.False(log.Contains("connection lost"), Lines(log));

        using var again = new GuardedBuffer(1024, 3072);
        Assert.True(await Task.Run(() => backend.Read(12288, again.Iov)).WaitAsync(Bound), Lines(log));
        Assert.Equal(Contents(12288, 4096), again.Data);
        Assert.Equal(1, server.Accepted);
    }

    [Fact]
    public async Task Chunks_out_of_order_with_a_hole_between_them_land_in_place()
    {
        using var server = new FakeNbdServer(SocketPath(), _ => peer =>
        {
            peer.Handshake();
            var r = peer.ReadRequest();
            peer.Send(DataChunk(0, r.Cookie, r.Offset + 3072, 1024));
            peer.Send(HoleChunk(0, r.Cookie, r.Offset + 1024, 1024));
            peer.Send(DataChunk(0, r.Cookie, r.Offset + 2048, 1024));
            peer.Send(DataChunk(0, r.Cookie, r.Offset, 1024));
            peer.Send(ChunkHeader(ChunkDone, ChunkNone, r.Cookie, 0));
            peer.ServeRequests();
        });
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(1536, 2560);
        Assert.True(await Task.Run(() => backend.Read(8192, buffer.Iov)).WaitAsync(Bound), Lines(log));
        var expected = Contents(8192, 4096);
        Array.Clear(expected, 1024, 1024);
        Assert.Equal(expected, buffer.Data);
        Assert.Equal(-1, buffer.FirstChangedOutside());
        Assert.DoesNotContain(log.Lines, l => l.Level >= LogLevel.Warning);
    }

    [Fact]
    public void Read_coverage_finds_what_a_byte_map_finds()
    {
        const int length = 64;
        var rng = new Random(13);
        var coverage = new NbdReadCoverage();
        var scattered = 0;
        for (var round = 0; round < 3000; round++)
        {
            var model = new bool[length];
            coverage.Reset();
            for (var c = 0; c < 48; c++)
            {
                var at = rng.Next(0, length);
                var size = rng.Next(1, Math.Min(round % 2 == 0 ? 4 : length, length - at) + 1);
                var result = coverage.Add((uint)at, (uint)size);
                if (model.AsSpan(at, size).Contains(true))
                {
                    Assert.Equal(NbdReadCoverage.Result.Overlap, result);
                    continue;
                }
                var with = (bool[])model.Clone();
                with.AsSpan(at, size).Fill(true);
                var pieces = Enumerable.Range(0, length).Count(i => with[i] && (i == 0 || !with[i - 1]));
                if (pieces > NbdReadCoverage.MaxPieces)
                {
                    Assert.Equal(NbdReadCoverage.Result.TooScattered, result);
                    scattered++;
                    continue;
                }
                Assert.Equal(NbdReadCoverage.Result.Added, result);
                model = with;
                Assert.Equal(!model.Contains(false), coverage.Covers(length));
            }
        }
        Assert.True(scattered > 0, "no round scattered a reply past the limit");
    }

    // ---------------- a reply that overtakes the send of a write's data ----------------

    private const int EarlyWrite = 1 << 20; // far more than a socket buffer holds: most of it is still ours to send when the reply comes

    private static unsafe bool StartWrite(NbdBackend backend, IoVec[] pinnedIov, CompletionPort port) =>
        backend.TryStart(new BlkIo
        {
            Kind = BlkIoKind.Write,
            Offset = 0,
            Length = EarlyWrite,
            Iov = (IoVec*)Unsafe.AsPointer(ref pinnedIov[0]),
            IovCount = pinnedIov.Length,
        }, new CompletionPortQueueIo(port));

    [Fact]
    public async Task A_write_answered_before_its_data_was_sent_completes_only_once_the_data_is_out()
    {
        using var completed = new ManualResetEventSlim();
        var received = new TaskCompletionSource<byte[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        using var server = new FakeNbdServer(SocketPath(), _ => peer =>
        {
            peer.Handshake();
            var w = peer.ReadRequestHeader();
            peer.Send(SimpleReply(w.Cookie)); // success, before a byte of the data was read
            completed.Wait(TimeSpan.FromSeconds(1)); // long enough for a completion that comes too early to show
            received.SetResult(peer.Receive((int)w.Length));
            peer.ServeRequests();
        });
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(EarlyWrite / 2, EarlyWrite / 2);
        var data = Contents(0, EarlyWrite);
        buffer.Write(data);
        var iov = GC.AllocateArray<IoVec>(2, pinned: true);
        buffer.Iov.CopyTo(iov);
        using var port = new CompletionPort(1, () =>
        {
            buffer.Write(new byte[EarlyWrite]); // the guest takes its buffer back as soon as the request completes
            completed.Set();
        });
        Assert.True(await Task.Run(() => StartWrite(backend, iov, port)).WaitAsync(Bound));
        Assert.True(await Task.Run(() => completed.Wait(Bound)), Lines(log));
        var sent = await received.Task.WaitAsync(Bound);
        Assert.True(sent.AsSpan().SequenceEqual(data), $"the server received bytes the guest wrote after the write completed (first difference at {sent.AsSpan().CommonPrefixLength(data)})");
        var results = new List<int>();
        port.Drain(results, (list, _, result) => list.Add(result));
        Assert.Equal([0], results);
    }

    [Fact]
    public async Task A_write_answered_before_its_data_was_sent_and_never_read_fails_within_the_timeout()
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                var w = peer.ReadRequestHeader();
                peer.Send(SimpleReply(w.Cookie));
                peer.Silence(); // never takes the data
            }
        : peer => peer.Serve());
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(EarlyWrite / 2, EarlyWrite / 2);
        Assert.False(await Task.Run(() => backend.Write(0, buffer.Iov)).WaitAsync(Bound), $"the write succeeded\n{Lines(log)}");
        Assert.True(log.Contains("a request not fully sent within 2 s (the server stopped reading)"), Lines(log));
        Assert.True(await Task.Run(() => backend.Write(0, buffer.Iov)).WaitAsync(Bound), Lines(log));
        Assert.Equal(2, server.Accepted);
    }

    [Fact]
    public async Task A_second_reply_to_a_completed_read_writes_nothing_into_its_buffers_and_fails_the_read_in_flight()
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                var first = peer.ReadRequest();
                peer.Answer(first);
                var second = peer.ReadRequest();
                // The first request's cookie again, with other bytes: that request is no longer in flight.
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkData, first.Cookie, first.Length + 8), Be64(first.Offset), Enumerable.Repeat((byte)0xEE, (int)first.Length).ToArray()));
                peer.DrainUntilClosed();
                _ = second;
            }
        : peer => peer.Serve());
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var first = new GuardedBuffer(2048, 2048);
        using var second = new GuardedBuffer(2048, 2048);
        Assert.True(await Task.Run(() => backend.Read(0, first.Iov)).WaitAsync(Bound));
        Assert.False(await Task.Run(() => backend.Read(4096, second.Iov)).WaitAsync(Bound));
        Assert.Equal(Contents(0, 4096), first.Data); // not the 0xEE of the stale reply
        Assert.Equal(-1, first.FirstChangedOutside());
        Assert.Equal(-1, second.FirstChangedOutside());
        Assert.True(log.Contains("which is not in flight"), Lines(log));
    }

    [Fact]
    public async Task A_write_answered_with_data_fails_with_EIO_and_the_next_connection_serves()
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                var w = peer.ReadRequest();
                peer.Send(DataChunk(ChunkDone, w.Cookie, w.Offset, (int)w.Length));
                peer.DrainUntilClosed();
            }
        : peer => peer.Serve());
        var log = new ListLogSink();
        using var backend = NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log));
        using var buffer = new GuardedBuffer(512, 512);
        Assert.False(await Task.Run(() => backend.Write(0, buffer.Iov)).WaitAsync(Bound));
        Assert.Equal(-1, buffer.FirstChangedOutside());
        Assert.True(buffer.Data.All(b => b == 0xA5), "a write's buffer was written into");
        Assert.True(log.Contains("a data chunk of 1032 bytes for a Write"), Lines(log));
        Assert.True(await Task.Run(() => backend.Write(0, buffer.Iov)).WaitAsync(Bound), Lines(log));
    }

    [Fact]
    public async Task Through_vhost_user_a_hostile_reply_is_IOERR_at_the_front_end_and_the_next_read_succeeds()
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                var r = peer.ReadRequest();
                peer.Send(Cat(ChunkHeader(ChunkDone, ChunkData, r.Cookie, (1u << 30) + 8), Be64(r.Offset), new byte[65536]));
                peer.DrainUntilClosed();
            }
        : peer => peer.Serve());
        using var rig = new NbdRig(_dir, server.Uri, new NbdOptions { Timeout = TimeSpan.FromSeconds(2), ConnectTimeout = TimeSpan.FromSeconds(10) });
        var buffer = new byte[8192];
        var e = await Assert.ThrowsAsync<BlkException>(() => rig.Driver.ReadAsync(65536, buffer).AsTask().WaitAsync(Bound));
        Assert.Equal(BlkStatus.IoErr, e.Status);
        await rig.Driver.ReadAsync(65536, buffer).AsTask().WaitAsync(Bound);
        Assert.Equal(Contents(65536, 8192), buffer);
        Assert.True(rig.Server.IsConnected);
        Assert.True(rig.Log.Contains("outside the read"), string.Join('\n', rig.Log.Lines));
    }

    // ---------------- handshake ----------------

    private static void BreakHandshake(string scenario, FakeNbdPeer peer)
    {
        switch (scenario)
        {
            case "a bad greeting":
                peer.Send("HELLO, I AM NOT NBD"u8[..18]);
                break;
            case "the old-style handshake":
                peer.Send(Cat(Be64(InitMagic), Be64(0x00420281861253), Be64(1 << 20), Be32(0), new byte[124]));
                break;
            case "no fixed newstyle":
                peer.Greet(flags: 0);
                break;
            case "a hang-up after the greeting":
                peer.Greet();
                peer.ClientFlags();
                peer.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
                return;
            case "silence":
                peer.Silence();
                return;
            case "a handshake trickled a byte at a time":
                {
                    // Every byte comes well within the timeout, the whole never ends: option replies without end.
                    peer.Greet();
                    peer.ClientFlags();
                    var (first, _) = peer.ReadOption();
                    var reply = Cat(Be64(OptReplyMagic), Be32(first), Be32(RepInfo), Be32(12), ExportInfo(1 << 20, 1));
                    while (true)
                    {
                        foreach (var b in reply)
                        {
                            peer.Send([b]);
                            Thread.Sleep(100);
                        }
                    }
                }
            case "endless replies to one option":
                peer.Greet();
                peer.ClientFlags();
                var (option, _) = peer.ReadOption();
                while (true)
                    peer.OptionReply(option, RepInfo, ExportInfo(1 << 20, 1));
            case "a refusal with control characters":
                Refuse(peer, RepErrUnknown, "no such\nexport\r\u001b[31m here"u8.ToArray());
                break;
            case "a refusal of 1 MiB":
                Negotiate(peer);
                peer.Send(Cat(Be64(OptReplyMagic), Be32(OptGo), Be32(RepErrUnknown), Be32(1 << 20)));
                break;
            case "a reply to an option never sent":
                Negotiate(peer);
                peer.OptionReply(99, RepAck, []);
                break;
            case "a bad option reply magic":
                peer.Greet();
                peer.ClientFlags();
                peer.ReadOption();
                peer.Send(new byte[20]);
                break;
            case "an absurd export size":
                peer.Handshake(size: ulong.MaxValue);
                break;
            case "an export smaller than a sector":
                peer.Handshake(size: 100);
                break;
            case "no export size":
                Negotiate(peer);
                peer.OptionReply(OptGo, RepAck, []);
                break;
            case "a minimum block size of 3":
                peer.Handshake(extraInfo: BlockSizeInfo(3, 4096, 1 << 20));
                break;
            case "a largest request smaller than a sector":
                peer.Handshake(extraInfo: BlockSizeInfo(1, 256, 256));
                break;
            default:
                throw new ArgumentException(scenario);
        }
        peer.DrainUntilClosed();
    }

    /// <summary>Greeting, client flags, structured replies acknowledged, NBD_OPT_GO read (not answered).</summary>
    private static void Negotiate(FakeNbdPeer peer)
    {
        peer.Greet();
        peer.ClientFlags();
        var (option, _) = peer.ReadOption();
        peer.OptionReply(option, RepAck, []);
        peer.ReadOption();
    }

    private static void Refuse(FakeNbdPeer peer, uint error, byte[] message)
    {
        Negotiate(peer);
        peer.OptionReply(OptGo, error, message);
    }

    [Theory]
    [InlineData("a bad greeting", "not an NBD server")]
    [InlineData("the old-style handshake", "only the old NBD handshake")]
    [InlineData("no fixed newstyle", "does not offer fixed newstyle")]
    [InlineData("a hang-up after the greeting", "the server closed the connection")]
    [InlineData("silence", "the server did not answer in time")]
    [InlineData("a handshake trickled a byte at a time", "the server did not answer in time")]
    [InlineData("endless replies to one option", "replies to one option")]
    [InlineData("a refusal with control characters", "refused export 'disk': no such export: no such export")]
    [InlineData("a refusal of 1 MiB", "an option reply of 1048576 bytes")]
    [InlineData("a reply to an option never sent", "a reply to an option we did not send")]
    [InlineData("a bad option reply magic", "bad option reply magic")]
    [InlineData("an absurd export size", "18446744073709551615 bytes")]
    [InlineData("an export smaller than a sector", "at least one 512-byte sector")]
    [InlineData("no export size", "without the export's size")]
    [InlineData("a minimum block size of 3", "impossible block sizes")]
    [InlineData("a largest request smaller than a sector", "smaller than a 512-byte sector")]
    public async Task A_broken_handshake_is_one_clear_line_at_start(string scenario, string message)
    {
        using var server = new FakeNbdServer(SocketPath(), _ => peer => BreakHandshake(scenario, peer));
        var log = new ListLogSink();
        var open = Task.Run(() => NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log, connectSeconds: 2)));
        var e = await Assert.ThrowsAsync<NbdException>(() => open.WaitAsync(Bound));
        Assert.Contains(message, e.Message, StringComparison.Ordinal);
        Assert.StartsWith(server.Uri + ": ", e.Message, StringComparison.Ordinal);
        Assert.False(e.Message.Any(char.IsControl), $"control characters in: {e.Message}");
    }

    [Fact]
    public async Task A_server_whose_accept_queue_is_full_is_waited_for_not_taken_for_connected()
    {
        // A Unix listener whose accept queue is full answers a non-blocking connect with EAGAIN
        // (unix(7)): nothing is in progress, and the socket polls writable while unconnected. The
        // client must try again until the connect timeout, not start a handshake on it.
        var accept = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var blockers = new List<Socket>();
        using var server = new FakeNbdServer(SocketPath(), _ => peer => peer.Serve(), backlog: 0, acceptFrom: accept.Task);
        try
        {
            // Fill the queue: connect until one is refused for room (backlog 0 holds one or two).
            while (true)
            {
                var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified) { Blocking = false };
                try
                {
                    s.Connect(new UnixDomainSocketEndPoint(server.Path));
                    blockers.Add(s);
                }
                catch (SocketException e) when (e.SocketErrorCode == SocketError.WouldBlock)
                {
                    s.Dispose();
                    break;
                }
                Assert.True(blockers.Count < 64, "the listener's queue never filled");
            }
            var log = new ListLogSink();
            var open = Task.Run(() => NbdBackend.Open(NbdUri.Parse(server.Uri), Options(log)));
            await Task.Delay(500);
            Assert.False(open.IsCompleted, open.Exception?.InnerException?.Message ?? "the open finished while the queue was full");
            // The queued connections leave (their scripts see them hang up) and accepting starts.
            foreach (var s in blockers)
                s.Dispose();
            accept.SetResult();
            using var backend = await open.WaitAsync(Bound);
            using var buffer = new GuardedBuffer(2048, 2048);
            Assert.True(await Task.Run(() => backend.Read(4096, buffer.Iov)).WaitAsync(Bound), Lines(log));
            Assert.Equal(Contents(4096, 4096), buffer.Data);
        }
        finally
        {
            foreach (var s in blockers)
                s.Dispose();
            accept.TrySetResult();
        }
    }

    [Fact]
    public void Vblk_serve_names_a_refused_export_and_an_absurd_size_in_one_line_and_exits()
    {
        var cases = new (Action<FakeNbdPeer> Script, string Message)[]
        {
            (peer => Refuse(peer, RepErrUnknown, "no export called disk\nhere"u8.ToArray()), "the server refused export 'disk': no such export: no export called disk here"),
            (peer => peer.Handshake(size: 1UL << 63), "9223372036854775808 bytes"),
        };
        foreach (var (script, message) in cases)
        {
            using var server = new FakeNbdServer(SocketPath(), _ => peer =>
            {
                script(peer);
                peer.DrainUntilClosed();
            });
            var socket = _dir.File("never.sock");
            var (code, output) = Repo.Run("dotnet", [Repo.VblkDll, "serve", server.Uri, "--socket", socket], TimeSpan.FromSeconds(60));
            var lines = output.Trim().Split('\n');
            Assert.True(code != 0, $"exit {code}\n{output}");
            Assert.True(lines.Length == 1 && lines[0].StartsWith("vblk serve: ", StringComparison.Ordinal) && lines[0].Contains(message, StringComparison.Ordinal),
                $"expected one line with \"{message}\", got:\n{output}");
            Assert.False(File.Exists(socket));
        }
    }
}
