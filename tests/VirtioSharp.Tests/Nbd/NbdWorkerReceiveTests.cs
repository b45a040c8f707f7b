using VirtioSharp.Block;
using VirtioSharp.Block.Nbd;
using VirtioSharp.Tests.VhostUser;
using static VirtioSharp.Tests.Nbd.FakeNbdPeer;

namespace VirtioSharp.Tests.Nbd;

/// <summary>
/// A queue whose worker receives its NBD connection's replies itself, from its io_uring (one
/// queue, one connection): replies split anywhere, answered out of order, hostile or never sent
/// end as they do on the connection's receiver thread, and a second queue on the same connection
/// hands the replies back to that thread.
/// </summary>
public sealed class NbdWorkerReceiveTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30); // far above every timeout below: reaching it is a hang
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    private string SocketPath() => _dir.File($"fake-{Guid.NewGuid():N}"[..13] + ".sock");

    private static NbdOptions Options => new() { Timeout = TimeSpan.FromSeconds(2), ConnectTimeout = TimeSpan.FromSeconds(10) };

    private static string Lines(NbdRig rig) => string.Join('\n', rig.Log.Lines.Select(l => $"{l.Level}: {l.Message}"));

    /// <summary>One read that succeeds, then waits until the queue's worker receives the connection's replies.</summary>
    private static async Task WorkerReceives(NbdRig rig)
    {
        var buffer = new byte[4096];
        await rig.Driver.ReadAsync(0, buffer).AsTask().WaitAsync(Bound);
        Assert.Equal(Contents(0, 4096), buffer);
        var until = DateTime.UtcNow + Bound;
        while (rig.Backend.ReceivedByWorkers != 1 && DateTime.UtcNow < until)
            await Task.Delay(10);
        Assert.True(rig.Backend.ReceivedByWorkers == 1, $"the queue's worker did not take the replies over\n{Lines(rig)}");
    }

    /// <summary>
    /// While the worker receives the replies, its call goes with the io_uring_enter it then waits
    /// in. Every read of a depth-1 run is still signalled by the pass that used it, not by the
    /// watchdog that resends lost interrupts (a call left unsent would be resent after 10 ms).
    /// </summary>
    [Fact]
    public async Task Each_reply_the_worker_receives_is_signalled_by_its_own_pass()
    {
        using var server = new FakeNbdServer(SocketPath(), _ => peer =>
        {
            peer.Handshake();
            while (true)
            {
                var r = peer.ReadRequest();
                if (r.Type == CmdDisc)
                    return;
                peer.Answer(r);
            }
        });
        using var rig = new NbdRig(_dir, server.Uri, Options, queues: 1);
        await WorkerReceives(rig);
        var watchdog = rig.Server.Watchdogs[0];
        var resentBefore = watchdog.Resent;
        const int reads = 300;
        var buffer = new byte[4096];
        for (var i = 0; i < reads; i++)
        {
            var offset = (ulong)(i % 128) * 4096;
            await rig.Driver.ReadAsync(offset, buffer).AsTask().WaitAsync(Bound);
            Assert.True(Contents(offset, 4096).AsSpan().SequenceEqual(buffer), $"read {i} differs");
        }
        Assert.Equal(1, rig.Backend.ReceivedByWorkers);
        // A busy machine may delay a few of the driver's reads past 10 ms.
        Assert.True(watchdog.Resent - resentBefore < reads / 10, $"{watchdog.Resent - resentBefore} calls sent again by the watchdog\n{Lines(rig)}");
    }

    [Fact]
    public async Task A_reply_split_at_every_byte_boundary_lands_whole_in_the_guest_buffers()
    {
        const int small = 512; // a data chunk of 20 + 8 + 512 bytes: every split point is tried
        var splits = new List<int>();
        using var server = new FakeNbdServer(SocketPath(), _ => peer =>
        {
            peer.Handshake();
            peer.Answer(peer.ReadRequest());
            for (var i = 0; ; i++)
            {
                var r = peer.ReadRequest();
                if (r.Type == CmdDisc)
                    return;
                var reply = DataChunk(ChunkDone, r.Cookie, r.Offset, (int)r.Length);
                // Reads of 512 bytes: split once at every point. Reads of 64 KiB (data received straight
                // into the guest's buffers): split in three at points around the header, the chunk's
                // offset and the size above which the rest goes straight to the buffers.
                var cuts = r.Length == small
                    ? [1 + i % (reply.Length - 1)]
                    : new[] { 1 + i % 40, 28 + i * 997 % (reply.Length - 29) }.Order().Distinct().ToArray();
                var at = 0;
                foreach (var cut in cuts)
                {
                    peer.Send(reply.AsSpan(at, cut - at));
                    Thread.Sleep(1); // the worker receives the part before the rest comes
                    at = cut;
                }
                peer.Send(reply.AsSpan(at));
                lock (splits)
                    splits.Add(cuts[0]);
            }
        });
        using var rig = new NbdRig(_dir, server.Uri, Options, queues: 1);
        await WorkerReceives(rig);
        var rounds = 20 + 8 + small - 1;
        for (var i = 0; i < rounds; i++)
        {
            var offset = (ulong)(i % 64) * 8192 + (ulong)(i % 7) * 512;
            var buffer = new byte[small];
            await rig.Driver.ReadAsync(offset, buffer).AsTask().WaitAsync(Bound);
            Assert.True(Contents(offset, small).AsSpan().SequenceEqual(buffer), $"read {i} at {offset} differs\n{Lines(rig)}");
        }
        for (var i = 0; i < 48; i++)
        {
            var offset = (ulong)(i % 8) * 65536;
            var buffer = new byte[65536];
            await rig.Driver.ReadAsync(offset, buffer).AsTask().WaitAsync(Bound);
            Assert.True(Contents(offset, 65536).AsSpan().SequenceEqual(buffer), $"64 KiB read {i} at {offset} differs\n{Lines(rig)}");
        }
        lock (splits)
            Assert.Equal(Enumerable.Range(1, rounds), splits.Take(rounds).Order());
        Assert.Equal(1, rig.Backend.ReceivedByWorkers);
        Assert.Equal(1, server.Accepted);
        Assert.Equal(0, rig.Device.Stats.IoErrors);
    }

    [Fact]
    public async Task Many_reads_in_flight_answered_in_reverse_order_and_in_scattered_chunks_land_in_place()
    {
        const int depth = 32, length = 8192;
        using var server = new FakeNbdServer(SocketPath(), _ => peer =>
        {
            peer.Handshake();
            peer.Answer(peer.ReadRequest());
            while (true)
            {
                var batch = new List<NbdRequest>();
                while (batch.Count < depth)
                {
                    var r = peer.ReadRequest();
                    if (r.Type == CmdDisc)
                        return;
                    batch.Add(r);
                }
                batch.Reverse();
                // Each read in three chunks: its second half, a hole-free first quarter, its second quarter, done last.
                var replies = batch.Select(r => r.Type != CmdRead ? SimpleReply(r.Cookie) : Cat(
                    DataChunk(0, r.Cookie, r.Offset + r.Length / 2, (int)r.Length / 2),
                    DataChunk(0, r.Cookie, r.Offset, (int)r.Length / 4),
                    DataChunk(ChunkDone, r.Cookie, r.Offset + r.Length / 4, (int)r.Length / 4))).ToArray();
                peer.Send(Cat(replies)); // all at once: one receive takes several replies and parts of others
            }
        });
        using var rig = new NbdRig(_dir, server.Uri, Options, queues: 1);
        await WorkerReceives(rig);
        for (var round = 0; round < 4; round++)
        {
            var reads = Enumerable.Range(0, depth).Select(async i =>
            {
                var offset = (ulong)((round * depth + i) % 120) * length;
                var buffer = new byte[length];
                await rig.Driver.ReadAsync(offset, buffer);
                return (offset, buffer);
            }).ToArray();
            foreach (var (offset, buffer) in await Task.WhenAll(reads).WaitAsync(Bound))
                Assert.True(Contents(offset, length).AsSpan().SequenceEqual(buffer), $"round {round}: the read at {offset} differs\n{Lines(rig)}");
        }
        Assert.Equal(1, rig.Backend.ReceivedByWorkers);
        Assert.Equal(0, rig.Device.Stats.IoErrors);
    }

    [Theory]
    [InlineData("a cookie never sent", "which is not in flight")]
    [InlineData("a chunk of 1 GiB", "outside the read")]
    [InlineData("a reply with a bad magic", "reply magic 0x42424242")]
    [InlineData("silence", "no reply within 2 s")]
    [InlineData("a hang-up half-way through the data", "the server closed the connection")]
    public async Task A_hostile_reply_received_by_the_worker_is_IOERR_and_the_next_read_goes_over_a_new_connection(string scenario, string reason)
    {
        using var server = new FakeNbdServer(SocketPath(), n => n == 0
            ? peer =>
            {
                peer.Handshake();
                peer.Answer(peer.ReadRequest());
                var r = peer.ReadRequest();
                switch (scenario)
                {
                    case "a cookie never sent":
                        peer.Send(DataChunk(ChunkDone, ulong.MaxValue, r.Offset, (int)r.Length));
                        break;
                    case "a chunk of 1 GiB":
                        peer.Send(Cat(ChunkHeader(ChunkDone, ChunkData, r.Cookie, (1u << 30) + 8), Be64(r.Offset), new byte[65536]));
                        break;
                    case "a reply with a bad magic":
                        peer.Send(Enumerable.Repeat((byte)0x42, 20).ToArray());
                        break;
                    case "silence":
                        peer.Silence();
                        return;
                    case "a hang-up half-way through the data":
                        peer.Send(DataChunk(ChunkDone, r.Cookie, r.Offset, (int)r.Length)[..(28 + (int)r.Length / 2)]);
                        peer.Socket.Shutdown(System.Net.Sockets.SocketShutdown.Both);
                        return;
                }
                peer.DrainUntilClosed();
            }
        : peer => peer.Serve());
        using var rig = new NbdRig(_dir, server.Uri, Options, queues: 1);
        await WorkerReceives(rig);
        var buffer = new byte[32768];
        var e = await Assert.ThrowsAsync<BlkException>(() => rig.Driver.ReadAsync(65536, buffer).AsTask().WaitAsync(Bound));
        Assert.Equal(BlkStatus.IoErr, e.Status);
        Assert.True(rig.Log.Contains(reason), $"{scenario}: expected \"{reason}\" in the log\n{Lines(rig)}");
        Assert.All(rig.Log.Lines, l => Assert.DoesNotContain('\n', l.Message));

        await Task.Delay(1100); // a reconnect is tried at most once a second
        await rig.Driver.ReadAsync(65536, buffer).AsTask().WaitAsync(Bound);
        Assert.Equal(Contents(65536, 32768), buffer);
        Assert.Equal(2, server.Accepted);
        Assert.True(rig.Server.IsConnected);
    }

    [Fact]
    public async Task A_second_queue_on_the_connection_makes_the_worker_give_the_replies_back_to_its_thread_and_both_are_served()
    {
        using var server = new FakeNbdServer(SocketPath(), _ => peer => peer.Serve());
        using var rig = new NbdRig(_dir, server.Uri, Options, queues: 2);
        // Queue 0 alone first: its worker takes the replies over. Then both queues, each task
        // keeping to its own: the second queue's first request makes the worker give them back.
        long QueueReads(int q) => rig.Device.Stats.Snapshot(q).ByType[(int)BlkRequestType.In];
        const int tasks = 8, reads = 64, length = 8192;
        var buffers = rig.Transport.Allocator.Allocate(tasks * length, 4096);
        var until = DateTime.UtcNow + Bound;
        do
            Assert.Equal(BlkStatus.Ok, await rig.Driver.SubmitDirectAsync(0, BlkRequestType.In, 0, buffers, length).AsTask().WaitAsync(Bound));
        while (rig.Backend.ReceivedByWorkers != 1 && DateTime.UtcNow < until);
        Assert.True(rig.Backend.ReceivedByWorkers == 1, $"queue 0's worker did not take the replies over\n{Lines(rig)}");
        Assert.Equal(0, QueueReads(1));
        var work = Enumerable.Range(0, tasks).Select(t => Task.Run(async () =>
        {
            var at = buffers + (ulong)(t * length);
            for (var i = 0; i < reads; i++)
            {
                var offset = (ulong)((t * reads + i) % 120) * length;
                Assert.Equal(BlkStatus.Ok, await rig.Driver.SubmitDirectAsync(t % 2, BlkRequestType.In, offset / 512, at, length));
                Assert.True(Contents(offset, length).AsSpan().SequenceEqual(rig.Transport.Memory.GetSpan(at, length)), $"the read at {offset} on queue {t % 2} differs\n{Lines(rig)}");
            }
        })).ToArray();
        await Task.WhenAll(work).WaitAsync(Bound);
        var perQueue = Enumerable.Range(0, 2).Select(QueueReads).ToArray();
        Assert.True(perQueue.All(n => n >= tasks / 2 * reads), $"reads per queue {string.Join(", ", perQueue)}");
        until = DateTime.UtcNow + Bound;
        while (rig.Backend.ReceivedByWorkers != 0 && DateTime.UtcNow < until)
            await Task.Delay(10);
        Assert.True(rig.Backend.ReceivedByWorkers == 0, $"a worker still receives; reads per queue {string.Join(", ", perQueue)}\n{Lines(rig)}");
        Assert.Equal(0, rig.Device.Stats.IoErrors);
    }
}
