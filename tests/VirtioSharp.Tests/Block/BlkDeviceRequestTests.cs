using System.Text;
using VirtioSharp.Block;
using VirtioSharp.Devices;
using VirtioSharp.Queues;
using VirtioSharp.Tests.Support;

namespace VirtioSharp.Tests.Block;

/// <summary>
/// virtio-blk requests (5.2.6) laid out by hand and run through <see cref="BlkDevice.ProcessQueue"/>:
/// the status byte each earns, the used length, and what reaches the disk.
/// </summary>
public sealed class BlkDeviceRequestTests
{
    private const ulong Capacity = 1 << 20;          // 2048 sectors
    private const ulong Sectors = Capacity / 512;
    private const byte Ok = (byte)BlkStatus.Ok;
    private const byte IoErr = (byte)BlkStatus.IoErr;
    private const byte Unsupp = (byte)BlkStatus.Unsupp;

    private static BlkHarness New(BlkDeviceOptions? options = null, ulong? negotiate = null, bool readOnly = false) =>
        new(new CountingBackend(Capacity, readOnly), options, negotiate);

    private static CountingBackend Disk(BlkHarness h) => (CountingBackend)h.Backend;

    private static byte[] Pattern(int length, int seed)
    {
        var b = new byte[length];
        new Random(seed).NextBytes(b);
        return b;
    }

    private static ulong Without(ulong features, int bit) => features & ~VirtioFeatures.Bit(bit);

    // ------------------------------------------------------------ IN / OUT

    [Fact]
    public void Out_writes_the_disk_and_In_reads_it_back_5_2_6()
    {
        using var h = New();
        var data = Pattern(1024, 1);
        var w = h.Run(Buf.R(h.Header(BlkRequestType.Out, 10), 16), Buf.R(h.Ring.Put(data), 1024), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Ok, w.Head, 1u), (w.Status, (ushort)w.UsedId, w.UsedLength)); // only the status byte was written
        Assert.Equal(data, Disk(h).Contents(10 * 512, 1024).ToArray());

        var into = h.Data(1024);
        var r = h.Run(Buf.R(h.Header(BlkRequestType.In, 10), 16), Buf.W(into, 1024), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Ok, 1025u), (r.Status, r.UsedLength)); // 2.7.8: len counts data and status
        Assert.Equal(data, h.Ring.Span(into, 1024).ToArray());
    }

    [Fact]
    public void The_last_sector_is_readable_and_writable_5_2_6_1()
    {
        using var h = New();
        var data = Pattern(512, 2);
        var w = h.Run(Buf.R(h.Header(BlkRequestType.Out, Sectors - 1), 16), Buf.R(h.Ring.Put(data), 512), Buf.W(h.StatusByte(), 1));
        Assert.Equal(Ok, w.Status);
        Assert.Equal(data, Disk(h).Contents(Capacity - 512, 512).ToArray());
        var into = h.Data(512);
        Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.In, Sectors - 1), 16), Buf.W(into, 512), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal(data, h.Ring.Span(into, 512).ToArray());
    }

    [Theory]
    [InlineData(Sectors, 1)]
    [InlineData(Sectors - 1, 2)]
    [InlineData(Sectors + 1, 0)]
    [InlineData(ulong.MaxValue, 1)]
    [InlineData(ulong.MaxValue - 1, 2)]
    [InlineData(1UL << 55, 1)]        // sector * 512 wraps to 0 in 64 bits
    [InlineData((1UL << 55) - 1, 2)]  // last byte wraps
    public void In_or_Out_beyond_capacity_is_IOERR_and_touches_nothing_5_2_6_1(ulong sector, int sectors)
    {
        using var h = New();
        Disk(h).Contents(0, 4096).Fill(0x5a);
        var len = (uint)(sectors * 512);
        var buffers = new List<Buf> { Buf.R(h.Header(BlkRequestType.Out, sector), 16) };
        if (len > 0)
            buffers.Add(Buf.R(h.Data((int)len, 0x11), len));
        buffers.Add(Buf.W(h.StatusByte(), 1));
        var w = h.Run([.. buffers]);
        Assert.Equal((IoErr, 1u), (w.Status, w.UsedLength));
        Assert.Equal(0, Disk(h).Writes);
        Assert.All(Disk(h).Contents(0, 4096).ToArray(), b => Assert.Equal(0x5a, b));

        var into = h.Data(Math.Max(1, (int)len), 0x77);
        var inBuffers = new List<Buf> { Buf.R(h.Header(BlkRequestType.In, sector), 16) };
        if (len > 0)
            inBuffers.Add(Buf.W(into, len));
        inBuffers.Add(Buf.W(h.StatusByte(), 1));
        var r = h.Run([.. inBuffers]);
        Assert.Equal((IoErr, 1u), (r.Status, r.UsedLength));
        Assert.Equal(0, Disk(h).Reads);
        Assert.All(h.Ring.Span(into, Math.Max(1, (int)len)).ToArray(), b => Assert.Equal(0x77, b));
    }

    [Theory]
    [InlineData(BlkRequestType.In, 100)]
    [InlineData(BlkRequestType.In, 513)]
    [InlineData(BlkRequestType.In, 1023)]
    [InlineData(BlkRequestType.Out, 1)]
    [InlineData(BlkRequestType.Out, 511)]
    [InlineData(BlkRequestType.Out, 1536 + 16)]
    public void Data_length_not_a_multiple_of_512_is_IOERR_5_2_6_1(BlkRequestType type, int length)
    {
        using var h = New();
        var data = Buf.New(h.Data(length, 0x33), (uint)length, type == BlkRequestType.In);
        var c = h.Run(Buf.R(h.Header(type, 0), 16), data, Buf.W(h.StatusByte(), 1));
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Reads + Disk(h).Writes);
    }

    [Theory]
    [InlineData(BlkRequestType.Out)]
    [InlineData(BlkRequestType.In)]
    public void A_transfer_longer_than_4_GiB_is_IOERR_not_truncated_2_7_8(BlkRequestType type)
    {
        // 1366 buffers of 3 MiB, all over the same guest memory: 4 GiB + 1.7 MiB of data on an 8 GiB disk.
        const int Segments = 1366;
        const uint Segment = 3 << 20;
        using var disk = new NullBackend(8UL << 30);
        using var h = new BlkHarness(disk, new BlkDeviceOptions { SizeMax = Segment }, queueSize: 2048);
        var data = h.Data((int)Segment, 0x44);
        var buffers = new List<Buf> { Buf.R(h.Header(type, 0), 16) };
        for (var i = 0; i < Segments; i++)
            buffers.Add(Buf.New(data, Segment, type == BlkRequestType.In));
        buffers.Add(Buf.W(h.StatusByte(), 1));
        var c = h.Run([.. buffers]);
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength)); // used len is 32 bits: refused, not cut to 1.7 MiB
        Assert.Equal((0L, 0L), (h.Device.Stats.BytesRead, h.Device.Stats.BytesWritten));
        Assert.All(h.Ring.Span(data, 4096).ToArray(), b => Assert.Equal(0x44, b));
        Assert.Contains(h.Log.Lines, l => l.Message.Contains("2.7.8", StringComparison.Ordinal) && l.Message.Contains("32-bit used length", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(BlkRequestType.Out)]
    [InlineData(BlkRequestType.In)]
    public void A_data_segment_longer_than_size_max_is_IOERR_and_shorter_ones_are_served_5_2_3(BlkRequestType type)
    {
        using var h = New(new BlkDeviceOptions { SizeMax = 4096 });
        Assert.True(VirtioFeatures.Has(h.Device.DeviceFeatures, BlkFeatures.SizeMax));
        var writable = type == BlkRequestType.In;

        var big = h.Data(8192, 0x21);
        var c = h.Run(Buf.R(h.Header(type, 0), 16), Buf.New(big, 8192, writable), Buf.W(h.StatusByte(), 1));
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Reads + Disk(h).Writes);
        Assert.All(h.Ring.Span(big, 8192).ToArray(), b => Assert.Equal(0x21, b));

        // The same 8 KiB in two segments of size_max each is a legal request.
        var a = h.Data(4096, 0x21);
        var b2 = h.Data(4096, 0x21);
        var ok = h.Run(Buf.R(h.Header(type, 0), 16), Buf.New(a, 4096, writable), Buf.New(b2, 4096, writable), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Ok, writable ? 8193u : 1u), (ok.Status, ok.UsedLength));
    }

    [Fact]
    public void Out_to_a_read_only_device_is_IOERR_and_writes_nothing_5_2_6_2()
    {
        foreach (var (options, backendReadOnly) in new[] { (new BlkDeviceOptions { ReadOnly = true }, false), (new BlkDeviceOptions(), true) })
        {
            using var h = New(options, readOnly: backendReadOnly);
            Assert.True(VirtioFeatures.Has(h.Device.DeviceFeatures, BlkFeatures.Ro)); // 5.2.3: offered
            var c = h.Run(Buf.R(h.Header(BlkRequestType.Out, 0), 16), Buf.R(h.Data(512, 0x99), 512), Buf.W(h.StatusByte(), 1));
            Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
            Assert.Equal(0, Disk(h).Writes);
            Assert.All(Disk(h).Contents(0, 512).ToArray(), b => Assert.Equal(0, b));
            // Reads still work.
            Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(h.Data(512), 512), Buf.W(h.StatusByte(), 1)).Status);
        }
    }

    // ------------------------------------------------------------ malformed requests

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(15)]
    public void A_header_shorter_than_16_bytes_is_IOERR_5_2_6(int headerLength)
    {
        using var h = New();
        var buffers = new List<Buf>();
        if (headerLength > 0)
            buffers.Add(Buf.R(h.Header(BlkRequestType.Out, 0), (uint)headerLength));
        buffers.Add(Buf.W(h.StatusByte(), 1));
        var c = h.Run([.. buffers]);
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Writes);
    }

    [Fact]
    public void A_header_in_a_device_writable_buffer_is_IOERR_5_2_6()
    {
        using var h = New();
        var header = h.Header(BlkRequestType.In, 0);
        var c = h.Run(Buf.W(header, 16), Buf.W(h.Data(512), 512), Buf.W(h.StatusByte(), 1));
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Reads);
    }

    [Fact]
    public void A_chain_without_a_device_writable_status_byte_comes_back_with_len_0_and_nothing_written_5_2_6()
    {
        using var h = New();

        // Header only: the device must not write into the driver's readable header.
        var header = h.Header(BlkRequestType.In, 0);
        var before = h.Ring.Span(header, 16).ToArray();
        var c = h.Run(Buf.R(header, 16));
        Assert.Equal((c.Head, 0u), ((ushort)c.UsedId, c.UsedLength));
        Assert.Equal(before, h.Ring.Span(header, 16).ToArray());

        // A device-readable "status" byte is left alone.
        var status = h.StatusByte();
        c = h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.R(status, 1));
        Assert.Equal((0u, BlkHarness.Untouched), (c.UsedLength, h.Ring.Span(status, 1)[0]));

        // A zero-length last buffer has no byte to write.
        c = h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(status, 0));
        Assert.Equal((0u, BlkHarness.Untouched), (c.UsedLength, h.Ring.Span(status, 1)[0]));

        // A status byte outside guest memory cannot be written.
        c = h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(h.Ring.RamEnd, 1));
        Assert.Equal(0u, c.UsedLength);
        Assert.Equal(0, Disk(h).Reads + Disk(h).Flushes);
    }

    [Theory]
    [InlineData(2u)]
    [InlineData(3u)]
    [InlineData(5u)]
    [InlineData(9u)]
    [InlineData((uint)BlkRequestType.GetLifetime)] // VIRTIO_BLK_F_LIFETIME not offered
    [InlineData(12u)]
    [InlineData((uint)BlkRequestType.SecureErase)] // VIRTIO_BLK_F_SECURE_ERASE not offered
    [InlineData(0x8000_0000u)]
    [InlineData(uint.MaxValue)]
    public void An_unknown_request_type_is_UNSUPP_5_2_6(uint type)
    {
        using var h = New();
        var c = h.Run(Buf.R(h.Header(type, 0), 16), Buf.W(h.Data(512), 512), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Unsupp, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Reads + Disk(h).Writes + Disk(h).Flushes + Disk(h).Discards + Disk(h).WriteZeroesCalls);
    }

    [Fact]
    public void A_structurally_broken_chain_still_returns_its_head_to_the_used_ring_2_7_8()
    {
        using var h = New();
        var ring = h.Ring;
        var status = h.StatusByte();

        // A loop.
        ring.WriteDescriptor(10, h.Header(BlkRequestType.In, 0), 16, SplitRing.DescFNext, 11);
        ring.WriteDescriptor(11, status, 1, SplitRing.DescFWrite | SplitRing.DescFNext, 10);
        var c = h.RunHead(10, status);
        Assert.Equal((10u, 0u, BlkHarness.Untouched), (c.UsedId, c.UsedLength, c.Status));

        // next past the table.
        ring.WriteDescriptor(20, h.Header(BlkRequestType.In, 0), 16, SplitRing.DescFNext, 64);
        c = h.RunHead(20, status);
        Assert.Equal((20u, 0u), (c.UsedId, c.UsedLength));

        // Nested indirect.
        var inner = ring.IndirectTable(Buf.W(status, 1));
        var outer = ring.Alloc(32);
        ring.WriteDescriptorAt(outer, h.Header(BlkRequestType.In, 0), 16, SplitRing.DescFNext, 1);
        ring.WriteDescriptorAt(outer + 16, inner, 16, SplitRing.DescFIndirect, 0);
        ring.WriteDescriptor(30, outer, 32, SplitRing.DescFIndirect, 0);
        c = h.RunHead(30, status);
        Assert.Equal((30u, 0u), (c.UsedId, c.UsedLength));

        Assert.Equal(0, h.Queue.InFlight);
        Assert.Equal(3, h.Device.Stats.Malformed);
        // The queue is not stalled: the next request is served.
        Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(h.StatusByte(), 1)).Status);
    }

    [Fact]
    public void A_data_buffer_outside_guest_memory_is_IOERR_when_the_status_byte_is_reachable_2_7_5()
    {
        using var h = New();
        var c = h.Run(Buf.R(h.Header(BlkRequestType.In, 0), 16), Buf.W(h.Ring.RamEnd - 256, 512), Buf.W(h.StatusByte(), 1));
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Reads);
    }

    [Fact]
    public void A_readable_buffer_after_a_writable_one_is_IOERR_2_7_4_2()
    {
        using var h = New();
        var c = h.Run(Buf.R(h.Header(BlkRequestType.Out, 0), 16), Buf.W(h.Data(512), 512), Buf.R(h.Data(512), 512), Buf.W(h.StatusByte(), 1));
        Assert.Equal((IoErr, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Writes);
    }

    [Fact]
    public void A_corrupt_available_ring_asks_for_DEVICE_NEEDS_RESET_2_7_6()
    {
        using var h = New();
        h.Ring.Offer(1000); // head past the table
        Assert.Equal(QueueOutcome.NeedsReset, h.Device.ProcessQueue(h.Queue));
        Assert.Contains(h.Device.Breaches.Breaches, b => b.Section == "2.7.6");
    }

    // ------------------------------------------------------------ framing independence (2.7.4)

    [Fact]
    public void Header_and_data_split_across_many_descriptors_still_work_2_7_4_1()
    {
        using var h = New();
        var header = new byte[16];
        new BlkRequestHeader((uint)BlkRequestType.Out, 0, 7).Write(header);
        var data = Pattern(1536, 3);
        var cuts = new[] { 100, 412, 1, 511, 512 }; // sums to 1536
        var buffers = new List<Buf> { Buf.R(h.Ring.Put(header.AsSpan(0, 5)), 5), Buf.R(h.Ring.Put(header.AsSpan(5)), 11) };
        var at = 0;
        foreach (var n in cuts)
        {
            buffers.Add(Buf.R(h.Ring.Put(data.AsSpan(at, n)), (uint)n));
            at += n;
        }
        buffers.Add(Buf.W(h.StatusByte(), 1));
        Assert.Equal(Ok, h.Run([.. buffers]).Status);
        Assert.Equal(data, Disk(h).Contents(7 * 512, 1536).ToArray());

        // Read it back into odd-sized writable pieces, the last one holding the data's tail and the status byte.
        var readHeader = new byte[16];
        new BlkRequestHeader((uint)BlkRequestType.In, 0, 7).Write(readHeader);
        var pieces = new[] { 3, 509, 1000 };
        var addresses = pieces.Select(n => h.Data(n)).ToArray();
        var tail = h.Data(24 + 1);
        var inBuffers = new List<Buf> { Buf.R(h.Ring.Put(readHeader.AsSpan(0, 15)), 15), Buf.R(h.Ring.Put(readHeader.AsSpan(15)), 1) };
        inBuffers.AddRange(pieces.Select((n, i) => Buf.W(addresses[i], (uint)n)));
        inBuffers.Add(Buf.W(tail, 25));
        var c = h.Run([.. inBuffers]);
        Assert.Equal((Ok, 1537u), (c.Status, c.UsedLength));
        Assert.Equal(Ok, h.Ring.Span(tail + 24, 1)[0]);
        var back = pieces.Select((n, i) => h.Ring.Span(addresses[i], n).ToArray()).SelectMany(x => x).Concat(h.Ring.Span(tail, 24).ToArray());
        Assert.Equal(data, back);
    }

    [Fact]
    public void Header_and_data_in_one_buffer_and_data_and_status_in_another_work_2_7_4_1()
    {
        using var h = New();
        var request = new byte[16 + 1024];
        new BlkRequestHeader((uint)BlkRequestType.Out, 0, 100).Write(request);
        Pattern(1024, 4).CopyTo(request, 16);
        Assert.Equal(Ok, h.Run(Buf.R(h.Ring.Put(request), (uint)request.Length), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal(request.AsSpan(16).ToArray(), Disk(h).Contents(100 * 512, 1024).ToArray());

        var reply = h.Data(1024 + 1);
        var c = h.Run(Buf.R(h.Header(BlkRequestType.In, 100), 16), Buf.W(reply, 1025));
        Assert.Equal((1025u, Ok), (c.UsedLength, h.Ring.Span(reply + 1024, 1)[0]));
        Assert.Equal(request.AsSpan(16).ToArray(), h.Ring.Span(reply, 1024).ToArray());
    }

    [Fact]
    public void A_request_in_an_indirect_table_works_2_7_5_3()
    {
        using var h = New();
        var data = Pattern(512, 5);
        var status = h.StatusByte();
        var table = h.Ring.IndirectTable(Buf.R(h.Header(BlkRequestType.Out, 3), 16), Buf.R(h.Ring.Put(data), 512), Buf.W(status, 1));
        h.Ring.WriteDescriptor(40, table, 48, SplitRing.DescFIndirect, 0);
        var c = h.RunHead(40, status);
        Assert.Equal((40u, 1u, Ok), (c.UsedId, c.UsedLength, c.Status));
        Assert.Equal(data, Disk(h).Contents(3 * 512, 512).ToArray());
    }

    // ------------------------------------------------------------ GET_ID, FLUSH

    [Fact]
    public void Get_id_returns_20_bytes_with_the_serial_NUL_padded_5_2_6()
    {
        using var h = New();
        var id = h.Data(20, 0xff);
        var c = h.Run(Buf.R(h.Header(BlkRequestType.GetId), 16), Buf.W(id, 20), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Ok, 21u), (c.Status, c.UsedLength));
        var expected = new byte[20];
        Encoding.ASCII.GetBytes("virtiosharp").CopyTo(expected, 0);
        Assert.Equal(expected, h.Ring.Span(id, 20).ToArray());
    }

    [Fact]
    public void Get_id_with_a_20_byte_serial_has_no_terminator_5_2_6()
    {
        const string serial = "ABCDEFGHIJ0123456789";
        using var h = New(new BlkDeviceOptions { Serial = serial });
        var id = h.Data(20, 0xff);
        Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.GetId), 16), Buf.W(id, 20), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal(Encoding.ASCII.GetBytes(serial), h.Ring.Span(id, 20).ToArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => new BlkDevice(new NullBackend(Capacity), new BlkDeviceOptions { Serial = serial + "X" }));
    }

    [Fact]
    public void Flush_calls_the_backend_flush_and_reports_its_failure_5_2_6()
    {
        using var h = New();
        Assert.True(VirtioFeatures.Has(h.Negotiated, BlkFeatures.Flush));
        var c = h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(h.StatusByte(), 1));
        Assert.Equal((Ok, 1u, 1), (c.Status, c.UsedLength, Disk(h).Flushes));

        Disk(h).FailFlush = true;
        Assert.Equal(IoErr, h.Run(Buf.R(h.Header(BlkRequestType.Flush), 16), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal(2, Disk(h).Flushes);
    }

    [Fact]
    public void With_FLUSH_offered_but_not_negotiated_every_write_is_flushed_before_completion_5_2_6_2()
    {
        using var h = New(negotiate: Without(new BlkDevice(new NullBackend(Capacity)).DeviceFeatures, BlkFeatures.Flush));
        for (var i = 0; i < 3; i++)
            Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.Out, (ulong)i), 16), Buf.R(h.Data(512, 1), 512), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal((3, 3), (Disk(h).Writes, Disk(h).Flushes));

        // A failed flush means the write is not stable: IOERR.
        Disk(h).FailFlush = true;
        Assert.Equal(IoErr, h.Run(Buf.R(h.Header(BlkRequestType.Out, 9), 16), Buf.R(h.Data(512, 1), 512), Buf.W(h.StatusByte(), 1)).Status);
    }

    [Fact]
    public void With_FLUSH_negotiated_writes_are_not_flushed_until_asked_5_2_6_2()
    {
        using var h = New();
        for (var i = 0; i < 3; i++)
            Assert.Equal(Ok, h.Run(Buf.R(h.Header(BlkRequestType.Out, (ulong)i), 16), Buf.R(h.Data(512, 1), 512), Buf.W(h.StatusByte(), 1)).Status);
        Assert.Equal((3, 0), (Disk(h).Writes, Disk(h).Flushes));
    }

    // ------------------------------------------------------------ DISCARD, WRITE_ZEROES

    private Completion Segments(BlkHarness h, BlkRequestType type, params BlkDiscardSegment[] segments) =>
        h.Run(Buf.R(h.Header(type), 16), Buf.R(h.Segments(segments), (uint)(16 * segments.Length)), Buf.W(h.StatusByte(), 1));

    [Theory]
    [InlineData(BlkRequestType.Discard, BlkFeatures.Discard)]
    [InlineData(BlkRequestType.WriteZeroes, BlkFeatures.WriteZeroes)]
    public void Discard_and_write_zeroes_without_the_feature_negotiated_are_UNSUPP_5_2_6_2(BlkRequestType type, int feature)
    {
        using var h = New(negotiate: Without(new BlkDevice(new NullBackend(Capacity)).DeviceFeatures, feature));
        Disk(h).Contents(0, 512).Fill(0xab);
        var c = Segments(h, type, new BlkDiscardSegment(0, 1, 0));
        Assert.Equal((Unsupp, 1u), (c.Status, c.UsedLength));
        Assert.Equal(0, Disk(h).Discards + Disk(h).WriteZeroesCalls);
        Assert.All(Disk(h).Contents(0, 512).ToArray(), b => Assert.Equal(0xab, b));
    }

    [Fact]
    public void Discard_with_the_unmap_flag_is_UNSUPP_5_2_6_2()
    {
        using var h = New();
        var c = Segments(h, BlkRequestType.Discard, new BlkDiscardSegment(0, 8, BlkLayout.SegmentFlagUnmap));
        Assert.Equal(Unsupp, c.Status);
        Assert.Equal(0, Disk(h).Discards);
    }

    [Theory]
    [InlineData(BlkRequestType.Discard, 2u)]
    [InlineData(BlkRequestType.Discard, 0x8000_0000u)]
    [InlineData(BlkRequestType.WriteZeroes, 2u)]
    [InlineData(BlkRequestType.WriteZeroes, 3u)]
    [InlineData(BlkRequestType.WriteZeroes, 0x8000_0000u)]
    public void An_unknown_segment_flag_is_UNSUPP_5_2_6_2(BlkRequestType type, uint flags)
    {
        using var h = New();
        Disk(h).Contents(0, 4096).Fill(0xab);
        var c = Segments(h, type, new BlkDiscardSegment(0, 8, flags));
        Assert.Equal(Unsupp, c.Status);
        Assert.All(Disk(h).Contents(0, 4096).ToArray(), b => Assert.Equal(0xab, b));
    }

    // UNSUPP answers "the device does not do this": a request refused for a flag in its second
    // segment must not have zeroed or discarded the first (only IOERR leaves segments indeterminate).
    [Theory]
    [InlineData(BlkRequestType.Discard, BlkLayout.SegmentFlagUnmap)]
    [InlineData(BlkRequestType.WriteZeroes, 2u)]
    public void A_bad_flag_in_a_later_segment_refuses_the_whole_request_before_any_IO_5_2_6_2(BlkRequestType type, uint flags)
    {
        using var h = New();
        Disk(h).Contents(0, 8192).Fill(0xab);
        var c = Segments(h, type, new BlkDiscardSegment(0, 4, 0), new BlkDiscardSegment(8, 4, flags));
        Assert.Equal(Unsupp, c.Status);
        Assert.Equal(0, Disk(h).Discards + Disk(h).WriteZeroesCalls);
        Assert.All(Disk(h).Contents(0, 8192).ToArray(), b => Assert.Equal(0xab, b));
    }

    [Theory]
    [InlineData(BlkRequestType.Discard)]
    [InlineData(BlkRequestType.WriteZeroes)]
    public void More_segments_than_the_device_allows_is_IOERR_5_2_6_1(BlkRequestType type)
    {
        using var h = New(new BlkDeviceOptions { MaxDiscardSegments = 2, MaxWriteZeroesSegments = 2 });
        Assert.Equal(2u, h.Device.Config.MaxDiscardSeg);
        var seg = new BlkDiscardSegment(0, 1, 0);
        Assert.Equal(Ok, Segments(h, type, seg, seg).Status);
        Assert.Equal(IoErr, Segments(h, type, seg, seg, seg).Status);
    }

    [Theory]
    [InlineData(BlkRequestType.Discard, Sectors, 1u)]
    [InlineData(BlkRequestType.Discard, Sectors - 1, 2u)]
    [InlineData(BlkRequestType.WriteZeroes, ulong.MaxValue, 1u)]
    [InlineData(BlkRequestType.WriteZeroes, 0UL, (uint)Sectors + 1)]
    public void A_segment_beyond_capacity_is_IOERR_5_2_6_1(BlkRequestType type, ulong sector, uint count)
    {
        using var h = New();
        Assert.Equal(IoErr, Segments(h, type, new BlkDiscardSegment(sector, count, 0)).Status);
        Assert.Equal(0, Disk(h).Discards + Disk(h).WriteZeroesCalls);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(8)]
    [InlineData(20)]
    public void Segment_data_that_is_not_whole_16_byte_segments_is_IOERR_5_2_6_1(int bytes)
    {
        using var h = New();
        var buffers = new List<Buf> { Buf.R(h.Header(BlkRequestType.Discard), 16) };
        if (bytes > 0)
            buffers.Add(Buf.R(h.Data(bytes), (uint)bytes));
        buffers.Add(Buf.W(h.StatusByte(), 1));
        Assert.Equal(IoErr, h.Run([.. buffers]).Status);
        Assert.Equal(0, Disk(h).Discards);
    }

    [Theory]
    [InlineData(0u)]
    [InlineData(BlkLayout.SegmentFlagUnmap)]
    public void Write_zeroes_really_zeroes_the_ranges_5_2_6_2(uint flags)
    {
        using var h = New();
        Disk(h).Contents(0, 64 * 1024).Fill(0xab);
        var c = Segments(h, BlkRequestType.WriteZeroes, new BlkDiscardSegment(2, 3, flags), new BlkDiscardSegment(20, 1, flags));
        Assert.Equal((Ok, 1u), (c.Status, c.UsedLength));
        Assert.Equal(2, Disk(h).WriteZeroesCalls);
        Assert.Equal(flags != 0, Disk(h).LastWriteZeroesMayUnmap);

        var disk = Disk(h).Contents(0, 64 * 1024).ToArray();
        for (var i = 0; i < disk.Length; i++)
        {
            var sector = i / 512;
            var zeroed = sector is >= 2 and < 5 or 20;
            Assert.True(disk[i] == (zeroed ? 0 : 0xab), $"byte {i} is {disk[i]}");
        }
    }

    [Fact]
    public void Discard_reaches_the_backend_for_each_segment_5_2_6_2()
    {
        using var h = New();
        var c = Segments(h, BlkRequestType.Discard, new BlkDiscardSegment(0, 8, 0), new BlkDiscardSegment(100, 8, 0));
        Assert.Equal(Ok, c.Status);
        Assert.Equal(2, Disk(h).Discards);
    }

    [Fact]
    public void Segments_split_across_descriptors_are_read_correctly_2_7_4_1()
    {
        using var h = New();
        Disk(h).Contents(0, 8192).Fill(0xab);
        var raw = new byte[32];
        new BlkDiscardSegment(1, 2, 0).Write(raw);
        new BlkDiscardSegment(10, 1, 0).Write(raw.AsSpan(16));
        var c = h.Run(Buf.R(h.Header(BlkRequestType.WriteZeroes), 16),
            Buf.R(h.Ring.Put(raw.AsSpan(0, 7)), 7), Buf.R(h.Ring.Put(raw.AsSpan(7, 20)), 20), Buf.R(h.Ring.Put(raw.AsSpan(27)), 5),
            Buf.W(h.StatusByte(), 1));
        Assert.Equal(Ok, c.Status);
        var disk = Disk(h).Contents(0, 8192).ToArray();
        Assert.All(disk.AsSpan(512, 1024).ToArray(), b => Assert.Equal(0, b));
        Assert.All(disk.AsSpan(10 * 512, 512).ToArray(), b => Assert.Equal(0, b));
        Assert.All(disk.AsSpan(0, 512).ToArray(), b => Assert.Equal(0xab, b));
        Assert.All(disk.AsSpan(3 * 512, 7 * 512).ToArray(), b => Assert.Equal(0xab, b));
    }
}
