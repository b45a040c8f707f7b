using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Memory;
using VirtioSharp.Native;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;
using VirtioSharp.Tests.VhostUser;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// Requests started on a queue's asynchronous I/O (<see cref="IQueueIo"/>) and completed later,
/// in any order: nothing is used before its completion, and then the status byte, the used
/// length and the disk are what a synchronous run gives.
/// </summary>
public sealed unsafe class BlkDeviceQueueIoTests : IDisposable
{
    private const byte Ok = (byte)BlkStatus.Ok;
    private const byte IoErr = (byte)BlkStatus.IoErr;
    private readonly TempDir _dir = new();
    private readonly string _image;

    public BlkDeviceQueueIoTests()
    {
        _image = _dir.File("disk.img");
        var bytes = new byte[1 << 20];
        new Random(7).NextBytes(bytes);
        File.WriteAllBytes(_image, bytes);
    }

    public void Dispose() => _dir.Dispose();

    /// <summary>An <see cref="IQueueIo"/> that holds each operation until the test runs it, with the result the test picks.</summary>
    private sealed class HeldIo(FileBackend file) : IQueueIo
    {
        public readonly record struct Op(char Kind, int Fd, nint Iov, int Count, ulong Offset, ushort Tag)
        {
            public ReadOnlySpan<IoVec> Vectors => new((void*)Iov, Count);
        }

        public List<Op> Held { get; } = [];
        public bool Refuse { get; set; }

        public bool TryStartRead(int fd, IoVec* iov, int count, ulong offset, ushort tag) => Hold(new('R', fd, (nint)iov, count, offset, tag));
        public bool TryStartFlush(int fd, ushort tag) => Hold(new('F', fd, 0, 0, 0, tag));

        private bool Hold(Op op)
        {
            if (Refuse)
                return false;
            Held.Add(op);
            return true;
        }

        /// <summary>Does the operation for real (through the backend) and returns the byte count, as the kernel would.</summary>
        public int Perform(Op op)
        {
            var bytes = 0;
            foreach (var v in op.Vectors)
                bytes += (int)v.Length;
            var ok = op.Kind == 'R' ? file.Read(op.Offset, op.Vectors) : file.Flush();
            Assert.True(ok);
            return op.Kind == 'F' ? 0 : bytes;
        }
    }

    private BlkHarness New(out HeldIo io, ulong? negotiate = null, BlkDeviceOptions? options = null, int queueSize = 64)
    {
        var file = FileBackend.Open(_image);
        io = new HeldIo(file);
        return new BlkHarness(file, options, negotiate, queueSize);
    }

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private byte[] OnDisk(long offset, int length)
    {
        using var f = File.OpenHandle(_image);
        var b = new byte[length];
        RandomAccess.Read(f, b, offset);
        return b;
    }

    private static (uint Id, uint Length) Used(BlkHarness h, int slot) => h.Ring.UsedElement(slot);

    [Fact]
    public void Reads_and_flushes_stay_in_flight_until_completed_and_complete_in_any_order()
    {
        using var h = New(out var io);
        var into = h.Data(2048, 0x55);
        var into2 = h.Data(512, 0x55);
        var s1 = h.StatusByte();
        var s2 = h.StatusByte();
        var s3 = h.StatusByte();
        var read = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 100), 16), Buf.W(into, 1024), Buf.W(into + 1024, 1024), Buf.W(s1, 1));
        var flush = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(s2, 1));
        var read2 = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 7), 16), Buf.W(into2, 512), Buf.W(s3, 1));
        h.Ring.Offer(read, flush, read2);

        Assert.Equal(QueueOutcome.None, h.Device.ProcessQueue(h.Queue, io));
        Assert.Equal(0, h.Ring.UsedIdx); // 2.7.8: nothing is used before its I/O is done
        Assert.Equal(3, h.Device.QueueIoInFlight(0));
        Assert.Equal(3, h.Queue.InFlight);
        Assert.Equal("RFR", string.Concat(io.Held.Select(o => o.Kind)));
        Assert.Equal((100UL * 512, 7UL * 512), (io.Held[0].Offset, io.Held[2].Offset));
        Assert.Equal(2, io.Held[0].Count); // one iovec per data buffer, straight into guest memory
        Assert.Equal(BlkHarness.Untouched, h.Ring.Span(s1, 1)[0]);

        // The kernel finishes them out of order: the second read, the flush, the first read.
        h.Device.CompleteIo(h.Queue, io.Held[2].Tag, io.Perform(io.Held[2]));
        h.Device.CompleteIo(h.Queue, io.Held[1].Tag, io.Perform(io.Held[1]));
        h.Device.CompleteIo(h.Queue, io.Held[0].Tag, io.Perform(io.Held[0]));
        Assert.True(h.Queue.PublishUsed());

        Assert.Equal(3, h.Ring.UsedIdx);
        Assert.Equal(((uint)read2, 513u), Used(h, 0)); // 2.7.8: data and status byte
        Assert.Equal(((uint)flush, 1u), Used(h, 1));
        Assert.Equal(((uint)read, 2049u), Used(h, 2));
        Assert.Equal((Ok, Ok, Ok), (h.Ring.Span(s1, 1)[0], h.Ring.Span(s2, 1)[0], h.Ring.Span(s3, 1)[0]));
        Assert.Equal(OnDisk(100 * 512, 2048), h.Ring.Span(into, 2048).ToArray());
        Assert.Equal(OnDisk(7 * 512, 512), h.Ring.Span(into2, 512).ToArray());
        Assert.Equal((0, 0), (h.Device.QueueIoInFlight(0), h.Queue.InFlight));
        Assert.Equal(3, h.Device.Stats.AsyncCompleted);
        Assert.Equal(2560L, h.Device.Stats.BytesRead);
    }

    [Fact]
    public void A_write_is_done_on_the_spot_while_reads_are_in_flight()
    {
        using var h = New(out var io);
        var data = Pattern(4096, 1);
        var into = h.Data(512);
        var s1 = h.StatusByte();
        var s2 = h.StatusByte();
        var read = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 3), 16), Buf.W(into, 512), Buf.W(s1, 1));
        var write = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Out, 8), 16), Buf.R(h.Ring.Put(data), 4096), Buf.W(s2, 1));
        h.Ring.Offer(read, write);
        Assert.Equal(QueueOutcome.Interrupt, h.Device.ProcessQueue(h.Queue, io));
        Assert.Equal("R", string.Concat(io.Held.Select(o => o.Kind)));
        Assert.Equal(1, h.Ring.UsedIdx);
        Assert.Equal(((uint)write, 1u), Used(h, 0)); // used before the read that came first
        Assert.Equal(Ok, h.Ring.Span(s2, 1)[0]);
        Assert.Equal(data, OnDisk(8 * 512, 4096));
        h.Device.CompleteIo(h.Queue, io.Held[0].Tag, io.Perform(io.Held[0]));
        Assert.Equal(((uint)read, 513u), Used(h, 1));
    }

    [Fact]
    public void A_failed_operation_earns_IOERR_and_only_the_status_byte_is_used()
    {
        using var h = New(out var io);
        var into = h.Data(512);
        var s1 = h.StatusByte();
        var s2 = h.StatusByte();
        h.Ring.Offer(
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 1), 16), Buf.W(into, 512), Buf.W(s1, 1)),
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(s2, 1)));
        h.Device.ProcessQueue(h.Queue, io);
        h.Device.CompleteIo(h.Queue, io.Held[0].Tag, -5); // -EIO
        h.Device.CompleteIo(h.Queue, io.Held[1].Tag, -28); // -ENOSPC
        Assert.Equal((IoErr, IoErr), (h.Ring.Span(s1, 1)[0], h.Ring.Span(s2, 1)[0]));
        Assert.Equal(1u, Used(h, 0).Length);
        Assert.Equal(1u, Used(h, 1).Length);
        Assert.Equal(2, h.Device.Stats.IoErrors);
    }

    [Fact]
    public void A_flush_on_a_file_that_cannot_be_synced_succeeds_as_the_synchronous_one_does()
    {
        using var h = New(out var io);
        var s = h.StatusByte();
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(s, 1)));
        h.Device.ProcessQueue(h.Queue, io);
        h.Device.CompleteIo(h.Queue, io.Held[0].Tag, -Errno.EINVAL);
        Assert.Equal(Ok, h.Ring.Span(s, 1)[0]);
    }

    [Fact]
    public void A_short_read_is_finished_synchronously_from_where_the_kernel_stopped()
    {
        using var h = New(out var io);
        var into = h.Data(3072, 0x55);
        var s = h.StatusByte();
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 40), 16), Buf.W(into, 1024), Buf.W(into + 1024, 2048), Buf.W(s, 1)));
        h.Device.ProcessQueue(h.Queue, io);
        // The kernel did 1300 bytes: the whole first buffer and 276 of the second.
        var op = io.Held[0];
        var partial = new IoVec[] { op.Vectors[0], new(op.Vectors[1].Base, 276) };
        Assert.True(((FileBackend)h.Backend).Read(op.Offset, partial));
        h.Device.CompleteIo(h.Queue, op.Tag, 1300);
        Assert.Equal(Ok, h.Ring.Span(s, 1)[0]);
        Assert.Equal(3073u, Used(h, 0).Length);
        Assert.Equal(OnDisk(40 * 512, 3072), h.Ring.Span(into, 3072).ToArray()); // no 0x55 left
    }

    [Fact]
    public void What_the_queue_io_refuses_and_what_it_does_not_carry_is_done_synchronously()
    {
        using var h = New(out var io);
        io.Refuse = true;
        var into = h.Data(512);
        var s = h.StatusByte();
        var id = h.Data(20);
        var s2 = h.StatusByte();
        var s3 = h.StatusByte();
        h.Ring.Offer(
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 5), 16), Buf.W(into, 512), Buf.W(s, 1)),
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.GetId), 16), Buf.W(id, 20), Buf.W(s2, 1)),
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Discard), 16), Buf.R(h.Segments(new BlkDiscardSegment(1000, 8, 0)), 16), Buf.W(s3, 1)));
        Assert.Equal(QueueOutcome.Interrupt, h.Device.ProcessQueue(h.Queue, io));
        Assert.Empty(io.Held);
        Assert.Equal(3, h.Ring.UsedIdx);
        Assert.Equal((Ok, Ok, Ok), (h.Ring.Span(s, 1)[0], h.Ring.Span(s2, 1)[0], h.Ring.Span(s3, 1)[0]));
        Assert.Equal(OnDisk(5 * 512, 512), h.Ring.Span(into, 512).ToArray());
        Assert.Equal(0, h.Device.Stats.AsyncCompleted);

        // GET_ID and DISCARD never go to the queue's I/O, even when it would take them.
        io.Refuse = false;
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.GetId), 16), Buf.W(h.Data(20), 20), Buf.W(h.StatusByte(), 1)));
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Empty(io.Held);
        Assert.Equal(4, h.Ring.UsedIdx);
    }

    [Fact]
    public void A_request_with_more_segments_than_seg_max_is_still_served_synchronously()
    {
        using var h = New(out var io, options: new BlkDeviceOptions { SegMax = 2 });
        var into = h.Data(1536);
        var s = h.StatusByte();
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(into, 512), Buf.W(into + 512, 512), Buf.W(into + 1024, 512), Buf.W(s, 1)));
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Empty(io.Held);
        Assert.Equal(Ok, h.Ring.Span(s, 1)[0]);
        Assert.Equal(OnDisk(0, 1536), h.Ring.Span(into, 1536).ToArray());

        // Exactly seg_max data segments, the status byte in a buffer of its own: asynchronous.
        var into2 = h.Data(1024);
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 4), 16), Buf.W(into2, 512), Buf.W(into2 + 512, 512), Buf.W(h.StatusByte(), 1)));
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Equal(2, Assert.Single(io.Held).Count);
    }

    [Fact]
    public void At_most_MaxAsyncPerQueue_requests_of_a_queue_are_in_flight_the_rest_run_synchronously()
    {
        const int requests = BlkDevice.MaxAsyncPerQueue + 10;
        using var h = New(out var io, queueSize: 1024);
        var heads = new ushort[requests];
        var statuses = new ulong[requests];
        for (var i = 0; i < requests; i++)
        {
            // Two descriptors a chain: the status byte is the last byte of the data buffer (2.7.4 allows any layout).
            var data = h.Data(513, 0xee);
            statuses[i] = data + 512;
            heads[i] = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, (ulong)i), 16), Buf.W(data, 513));
        }
        h.Ring.Offer(heads);
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Equal(BlkDevice.MaxAsyncPerQueue, io.Held.Count);
        Assert.Equal(10, h.Ring.UsedIdx);
        foreach (var op in io.Held)
            h.Device.CompleteIo(h.Queue, op.Tag, io.Perform(op));
        Assert.Equal(requests, h.Ring.UsedIdx);
        Assert.All(statuses, s => Assert.Equal(Ok, h.Ring.Span(s, 1)[0]));

        // Every slot came back: another full round starts asynchronously again.
        io.Held.Clear();
        h.Ring.Offer(heads[..BlkDevice.MaxAsyncPerQueue]);
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Equal(BlkDevice.MaxAsyncPerQueue, io.Held.Count);
    }

    [Fact]
    public void A_completion_for_a_head_with_nothing_in_flight_changes_nothing_and_is_logged()
    {
        using var h = New(out var io);
        h.Device.CompleteIo(h.Queue, 3, 512);
        Assert.Equal(0, h.Ring.UsedIdx);
        Assert.Contains(h.Log.Lines, l => l.Level == Diagnostics.LogLevel.Error && l.Message.Contains("head 3, which has no I/O in flight", StringComparison.Ordinal));
    }

    [Fact]
    public void A_backend_without_a_file_descriptor_never_uses_the_queue_io()
    {
        using var h = new BlkHarness(new MemoryBackend(1 << 20));
        var file = FileBackend.Open(_image);
        using var _ = file;
        var io = new HeldIo(file);
        Assert.False(h.Device.SupportsQueueIo);
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(h.Data(512), 512), Buf.W(h.StatusByte(), 1)));
        h.Device.ProcessQueue(h.Queue, io);
        Assert.Empty(io.Held);
        Assert.Equal(1, h.Ring.UsedIdx);
    }
    /// <summary>A worker's port as a test drives it: the wake-up sets an event; <see cref="Take"/> finishes what was posted.</summary>
    private sealed class TestPort : IDisposable
    {
        private readonly AutoResetEvent _woken = new(false);

        public TestPort(int capacity)
        {
            Port = new CompletionPort(capacity, () => _woken.Set());
            Io = new CompletionPortQueueIo(Port);
        }

        public CompletionPort Port { get; }
        public CompletionPortQueueIo Io { get; }

        /// <summary>Waits for a wake-up and hands every posted completion to the device, as the worker does.</summary>
        public int Take(BlkHarness h)
        {
            Assert.True(_woken.WaitOne(10_000), "no wake-up from the completion port");
            return Port.Drain(h, static (h, tag, result) => h.Device.CompleteIo(h.Queue, tag, result));
        }

        public void Dispose()
        {
            Port.Dispose();
            _woken.Dispose();
        }
    }

    [Fact]
    public void An_asynchronous_backend_completes_every_kind_of_request_from_other_threads_in_any_order()
    {
        var backend = new ThreadedBackend(1 << 20);
        using var h = new BlkHarness(backend);
        using var port = new TestPort(h.Device.MaxQueueSize);
        var written = Pattern(4096, 11);
        Pattern(8192, 12).CopyTo(backend.Disk.Contents(0, 8192));
        var into = h.Data(1536, 0x55);
        ulong[] s = [h.StatusByte(), h.StatusByte(), h.StatusByte(), h.StatusByte(), h.StatusByte()];
        var read = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 2), 16), Buf.W(into, 512), Buf.W(into + 512, 1024), Buf.W(s[0], 1));
        var write = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Out, 100), 16), Buf.R(h.Ring.Put(written), 4096), Buf.W(s[1], 1));
        var flush = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(s[2], 1));
        var discard = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Discard), 16), Buf.R(h.Segments(new BlkDiscardSegment(0, 1, 0)), 16), Buf.W(s[3], 1));
        var zeroes = h.Ring.Chain(Buf.R(h.Header(BlkRequestType.WriteZeroes), 16), Buf.R(h.Segments(new BlkDiscardSegment(12, 2, BlkLayout.SegmentFlagUnmap)), 16), Buf.W(s[4], 1));
        h.Ring.Offer(read, write, flush, discard, zeroes);

        Assert.Equal(QueueOutcome.None, h.Device.ProcessQueue(h.Queue, port.Io));
        Assert.Equal(0, h.Ring.UsedIdx); // 2.7.8: nothing is used before its I/O is done
        Assert.Equal(5, h.Device.QueueIoInFlight(0));
        var held = backend.Held;
        Assert.Equal([BlkIoKind.Read, BlkIoKind.Write, BlkIoKind.Flush, BlkIoKind.Discard, BlkIoKind.WriteZeroes], held.Select(o => o.Io.Kind));
        Assert.Equal(BlkIoFlags.None, held[1].Io.Flags); // FLUSH negotiated: no write needs FUA
        Assert.Equal((12UL * 512, 1024u, BlkIoFlags.MayUnmap), (held[4].Io.Offset, held[4].Io.Length, held[4].Io.Flags));
        Assert.Equal(2, held[0].Io.IovCount); // straight into guest memory, one iovec per buffer

        backend.ReleaseAllReversed(); // five threads post at once, last started first
        var taken = 0;
        while (taken < 5)
            taken += port.Take(h);
        Assert.True(h.Queue.PublishUsed());
        Assert.Equal(5, h.Ring.UsedIdx);
        var used = Enumerable.Range(0, 5).Select(i => Used(h, i)).ToDictionary(u => (ushort)u.Id, u => u.Length);
        Assert.Equal(1537u, used[read]); // 2.7.8: data and status byte
        Assert.All(new[] { write, flush, discard, zeroes }, head => Assert.Equal(1u, used[head]));
        Assert.All(s, a => Assert.Equal(Ok, h.Ring.Span(a, 1)[0]));
        Assert.Equal(backend.Disk.Contents(2 * 512, 1536).ToArray(), h.Ring.Span(into, 1536).ToArray());
        Assert.Equal(written, backend.Disk.Contents(100 * 512, 4096).ToArray());
        Assert.Equal(new byte[512], backend.Disk.Contents(0, 512).ToArray());
        Assert.Equal(new byte[1024], backend.Disk.Contents(12 * 512, 1024).ToArray());
        Assert.Equal((0, 0), (h.Device.QueueIoInFlight(0), h.Queue.InFlight));
        Assert.Equal(5, h.Device.Stats.AsyncCompleted);
        Assert.Equal(0, backend.SyncCalls);
    }

    [Fact]
    public void Writes_are_FUA_when_FLUSH_is_not_negotiated_and_failures_earn_IOERR()
    {
        var backend = new ThreadedBackend(1 << 20) { FailWith = 5 };
        var h0 = new BlkHarness(new MemoryBackend(512));
        var features = h0.Device.DeviceFeatures & ~VirtioFeatures.Bit(BlkFeatures.Flush);
        h0.Dispose();
        using var h = new BlkHarness(backend, negotiate: features);
        using var port = new TestPort(h.Device.MaxQueueSize);
        var into = h.Data(512, 0x55);
        var s1 = h.StatusByte();
        var s2 = h.StatusByte();
        h.Ring.Offer(
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Out, 1), 16), Buf.R(h.Ring.Put(Pattern(512, 3)), 512), Buf.W(s1, 1)),
            h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 1), 16), Buf.W(into, 512), Buf.W(s2, 1)));
        h.Device.ProcessQueue(h.Queue, port.Io);
        Assert.Equal(BlkIoFlags.Fua, backend.Held[0].Io.Flags); // 5.2.6.2: stable at completion
        backend.ReleaseAllReversed();
        var taken = 0;
        while (taken < 2)
            taken += port.Take(h);
        Assert.Equal((IoErr, IoErr), (h.Ring.Span(s1, 1)[0], h.Ring.Span(s2, 1)[0]));
        Assert.Equal(1u, Used(h, 0).Length); // only the status byte
        Assert.Equal(1u, Used(h, 1).Length);
        Assert.Equal(2, h.Device.Stats.IoErrors);
        Assert.Equal(0, h.Device.QueueIoInFlight(0));
    }

    [Fact]
    public void What_an_asynchronous_backend_refuses_and_what_no_slot_holds_is_served_by_its_synchronous_calls()
    {
        var backend = new ThreadedBackend(1 << 20);
        using var h = new BlkHarness(backend, queueSize: 1024);
        using var port = new TestPort(h.Device.MaxQueueSize);
        // Past MaxAsyncPerQueue, requests run synchronously; a two-segment discard always does.
        const int requests = BlkDevice.MaxAsyncPerQueue + 3;
        var heads = new List<ushort>();
        for (var i = 0; i < requests; i++)
        {
            var data = h.Data(513, 0xee);
            heads.Add(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, (ulong)i), 16), Buf.W(data, 513)));
        }
        var s = h.StatusByte();
        heads.Add(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.Discard), 16),
            Buf.R(h.Segments(new BlkDiscardSegment(0, 1, 0), new BlkDiscardSegment(8, 1, 0)), 32), Buf.W(s, 1)));
        h.Ring.Offer([.. heads]);
        h.Device.ProcessQueue(h.Queue, port.Io);
        Assert.Equal(BlkDevice.MaxAsyncPerQueue, backend.Started);
        Assert.Equal(4, h.Ring.UsedIdx);
        Assert.Equal(3, backend.SyncCalls);
        Assert.Equal(Ok, h.Ring.Span(s, 1)[0]);

        // A refused start gives its slot back: with every slot free again, the backend refusing
        // everything still leaves the queue served.
        backend.ReleaseAllReversed();
        var taken = 0;
        while (taken < BlkDevice.MaxAsyncPerQueue)
            taken += port.Take(h);
        backend.Refuse = true;
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(h.Data(512), 512), Buf.W(h.StatusByte(), 1)));
        h.Device.ProcessQueue(h.Queue, port.Io);
        Assert.Equal(requests + 2, h.Ring.UsedIdx);
        Assert.Equal(0, h.Device.QueueIoInFlight(0));
    }

    /// <summary>What descriptor <paramref name="fd"/> of this process names now; null when it is closed.</summary>
    private static string? Names(int fd)
    {
        try
        {
            return new FileInfo($"/proc/self/fd/{fd}").LinkTarget;
        }
        catch (IOException)
        {
            return null;
        }
    }

    [Fact]
    public void A_backend_disposed_with_a_read_in_flight_keeps_its_descriptor_until_the_completion()
    {
        using var h = New(out var io);
        var into = h.Data(512);
        var status = h.StatusByte();
        h.Ring.Offer(h.Ring.Chain(Buf.R(h.Header(BlkRequestType.In, 5), 16), Buf.W(into, 512), Buf.W(status, 1)));
        h.Device.ProcessQueue(h.Queue, io);
        var op = Assert.Single(io.Held);
        var image = Path.GetFullPath(_image);
        Assert.Equal(image, Names(op.Fd));

        h.Backend.Dispose();
        Assert.Equal(image, Names(op.Fd)); // the submission still names it: the number must not be reused yet

        using (var again = FileBackend.Open(_image))
            Assert.True(again.Read(op.Offset, op.Vectors));
        h.Device.CompleteIo(h.Queue, op.Tag, 512);
        Assert.NotEqual(image, Names(op.Fd)); // the last reference went with the completion
        Assert.Equal(Ok, h.Ring.Span(status, 1)[0]);
        Assert.Equal(OnDisk(5 * 512, 512), h.Ring.Span(into, 512).ToArray());
    }
}
