using VirtioSharp.Block;
using VirtioSharp.Devices;

namespace VirtioSharp.Tests.Conformance;

/// <summary>
/// virtio-blk request rules (5.2.6) broken on purpose, each checked for its diagnosis and the
/// status the device answers with, with strict off, warn and fail (see <see cref="BreachCheck"/>).
/// </summary>
public sealed class BlkRequestBreachTests
{
    private static readonly ulong NoDiscard = RingBreachTests.Offered & ~VirtioFeatures.Bit(BlkFeatures.Discard);
    private static readonly ulong NoWriteZeroes = RingBreachTests.Offered & ~VirtioFeatures.Bit(BlkFeatures.WriteZeroes);

    private static Seg Header(HandDriver d, BlkRequestType type, ulong sector = 0) => new(d.Header(type, sector), BlkLayout.HeaderSize);
    private static Seg Status(HandDriver d) => new(d.StatusByte(), 1, true);
    private static Seg In(HandDriver d, uint length = 512) => new(d.Data(length), length, true);
    private static Seg Out(HandDriver d, uint length = 512) => new(d.Data(length), length);

    private static Seg Segments(HandDriver d, int count, ulong sector = 0, uint sectors = 1, uint flags = 0) =>
        new(d.Segments([.. Enumerable.Range(0, count).Select(i => new BlkDiscardSegment(sector + (ulong)i * sectors, sectors, flags))]),
            (uint)(count * BlkLayout.DiscardSegmentSize));

    // --- the request's shape (5.2.6: header, data, status) ---

    [Fact]
    public void Header_shorter_than_16_bytes_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "a device-readable header of 16 bytes", "found 8 device-readable bytes"),
        d => d.Submit(new Seg(d.Header(BlkRequestType.Flush), 8), Status(d)));

    [Fact]
    public void Header_split_over_two_descriptors_is_served()
    {
        using var d = new HandDriver(Diagnostics.StrictMode.Fail);
        d.Init();
        var h = d.Header(BlkRequestType.In, 2);
        var s = d.Submit(new Seg(h, 5), new Seg(h + 5, 11), In(d), Status(d));
        Assert.Equal((byte)BlkStatus.Ok, d.At(s.StatusAddress));
        Assert.Equal(513u, d.Used(0).Length);
        Assert.Equal(0, d.Breaches.Total);
    }

    [Fact]
    public void Header_device_writable_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "a device-readable request header", "the first buffer is device-writable"),
        d => d.Submit(new Seg(d.Header(BlkRequestType.In), 16, true), In(d), Status(d)));

    [Fact]
    public void Status_byte_not_device_writable_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "a device-writable status byte at the end of the chain", "a device-readable last buffer") { Reply = Reply.NoStatus },
        d => d.Submit(Header(d, BlkRequestType.Out), new Seg(d.Data(512, fill: 0xff), 512)));

    [Fact]
    public void Status_buffer_empty_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "a device-writable status byte at the end of the chain", "an empty last buffer") { Reply = Reply.NoStatus },
        d => d.Submit(Header(d, BlkRequestType.Flush), new Seg(d.StatusByte(), 0, true)));

    [Fact]
    public void Status_byte_not_the_only_writable_byte_of_a_write_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "the status byte as the only device-writable byte of a OUT request", "8 device-writable bytes before it")
        { StrictOnly = true, Status = BlkStatus.Ok },
        d => d.Submit(Header(d, BlkRequestType.Out, 4), Out(d), new Seg(d.Data(8), 8, true), Status(d)));

    [Fact]
    public void Readable_bytes_after_the_header_of_a_read_5_2_6() => BreachCheck.Ring(
        new Expect("5.2.6", "only the 16-byte header device-readable in a IN request", "32 more device-readable bytes")
        { StrictOnly = true, Status = BlkStatus.Ok, UsedLength = 513 },
        d => d.Submit(Header(d, BlkRequestType.In, 4), new Seg(d.Data(32), 32), In(d), Status(d)));

    // --- IN / OUT (5.2.6.1) ---

    [Fact]
    public void Read_length_not_a_multiple_of_512_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "IN/OUT data length a multiple of 512", "found 100 bytes"),
        d => d.Submit(Header(d, BlkRequestType.In), In(d, 100), Status(d)));

    [Fact]
    public void Write_length_not_a_multiple_of_512_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "IN/OUT data length a multiple of 512", "found 513 bytes"),
        d => d.Submit(Header(d, BlkRequestType.Out), Out(d, 513), Status(d)));

    [Fact]
    public void Read_beyond_capacity_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", $"sectors within capacity {HandDriver.DiskSectors}", $"sector {HandDriver.DiskSectors - 1} + 2"),
        d => d.Submit(Header(d, BlkRequestType.In, HandDriver.DiskSectors - 1), In(d, 1024), Status(d)));

    [Fact]
    public void Write_to_a_read_only_device_5_2_6_2()
    {
        BreachCheck.Ring(
            new Expect("5.2.6.2", "no write to a device that offers VIRTIO_BLK_F_RO", "OUT at sector 7"),
            d =>
            {
                var s = d.Submit(Header(d, BlkRequestType.Out, 7), Out(d), Status(d));
                Assert.All(d.Backend.Contents(7 * 512, 512).ToArray(), b => Assert.Equal(0, b)); // and nothing written
                return s;
            },
            readOnly: true);
    }

    // --- FLUSH and GET_ID (5.2.6.1) ---

    [Fact]
    public void Flush_with_a_non_zero_sector_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "sector 0 in a FLUSH request", "found sector 9") { StrictOnly = true, Status = BlkStatus.Ok },
        d => d.Submit(Header(d, BlkRequestType.Flush, 9), Status(d)));

    [Fact]
    public void Flush_with_data_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "no data in a FLUSH request (SHOULD NOT)", "512 bytes of data") { StrictOnly = true, Status = BlkStatus.Ok },
        d => d.Submit(Header(d, BlkRequestType.Flush), Out(d), Status(d)));

    [Fact]
    public void Get_id_buffer_shorter_than_20_bytes_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "a GET_ID data buffer of 20 bytes", "found 10 bytes") { StrictOnly = true, Status = BlkStatus.Ok, UsedLength = 11 },
        d => d.Submit(Header(d, BlkRequestType.GetId), In(d, 10), Status(d)));

    // --- DISCARD and WRITE_ZEROES (5.2.6.1, 5.2.6.2) ---

    [Fact]
    public void Discard_without_the_feature_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "VIRTIO_BLK_F_DISCARD negotiated before DISCARD requests") { Status = BlkStatus.Unsupp },
        d => d.Submit(Header(d, BlkRequestType.Discard), Segments(d, 1), Status(d)),
        features: NoDiscard);

    [Fact]
    public void Write_zeroes_without_the_feature_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "VIRTIO_BLK_F_WRITE_ZEROES negotiated before WRITE_ZEROES requests") { Status = BlkStatus.Unsupp },
        d => d.Submit(Header(d, BlkRequestType.WriteZeroes), Segments(d, 1), Status(d)),
        features: NoWriteZeroes);

    [Fact]
    public void Discard_with_more_segments_than_max_discard_seg_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "at most 4 DISCARD segments (config max_discard_seg)", "found 5 segments"),
        d => d.Submit(Header(d, BlkRequestType.Discard), Segments(d, 5), Status(d)),
        options: o => o with { MaxDiscardSegments = 4 });

    [Fact]
    public void Write_zeroes_with_more_segments_than_max_write_zeroes_seg_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "at most 4 WRITE_ZEROES segments (config max_write_zeroes_seg)", "found 5 segments"),
        d => d.Submit(Header(d, BlkRequestType.WriteZeroes), Segments(d, 5), Status(d)),
        options: o => o with { MaxWriteZeroesSegments = 4 });

    [Fact]
    public void Discard_with_more_sectors_than_max_discard_sectors_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "at most 8 sectors (config max_discard_sectors)", "sector 0 + 16 in segment 0"),
        d => d.Submit(Header(d, BlkRequestType.Discard), Segments(d, 1, sectors: 16), Status(d)),
        options: o => o with { MaxDiscardSectors = 8 });

    [Fact]
    public void Write_zeroes_with_more_sectors_than_max_write_zeroes_sectors_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "at most 8 sectors (config max_write_zeroes_sectors)", "sector 16 + 16 in segment 1"),
        d => d.Submit(Header(d, BlkRequestType.WriteZeroes),
            new Seg(d.Segments(new BlkDiscardSegment(0, 8, 0), new BlkDiscardSegment(16, 16, 0)), 2 * BlkLayout.DiscardSegmentSize), Status(d)),
        options: o => o with { MaxWriteZeroesSectors = 8 });

    [Fact]
    public void Discard_beyond_capacity_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", $"segment within capacity {HandDriver.DiskSectors}", $"sector {HandDriver.DiskSectors} + 1"),
        d => d.Submit(Header(d, BlkRequestType.Discard), Segments(d, 1, sector: HandDriver.DiskSectors), Status(d)));

    [Fact]
    public void Discard_data_not_a_multiple_of_the_segment_size_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "data a non-empty multiple of 16-byte segments", "found 20 bytes"),
        d => d.Submit(Header(d, BlkRequestType.Discard), Out(d, 20), Status(d)));

    [Fact]
    public void Discard_with_the_unmap_flag_5_2_6_1() => BreachCheck.Ring(
        new Expect("5.2.6.1", "discard segment flags 0 (no unmap)", "flags 0x1 in segment 0") { Status = BlkStatus.Unsupp },
        d => d.Submit(Header(d, BlkRequestType.Discard), Segments(d, 1, flags: BlkLayout.SegmentFlagUnmap), Status(d)));

    [Fact]
    public void Write_zeroes_with_an_unknown_flag_5_2_6_2() => BreachCheck.Ring(
        new Expect("5.2.6.2", "write-zeroes segment flags 0 or unmap", "flags 0x2 in segment 0") { Status = BlkStatus.Unsupp },
        d => d.Submit(Header(d, BlkRequestType.WriteZeroes), Segments(d, 1, flags: 2), Status(d)));
}
