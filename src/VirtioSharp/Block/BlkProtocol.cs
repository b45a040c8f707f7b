using System.Buffers.Binary;

namespace VirtioSharp.Block;

/// <summary>virtio-blk request types (5.2.6).</summary>
public enum BlkRequestType : uint
{
    In = 0,
    Out = 1,
    Flush = 4,
    GetId = 8,
    GetLifetime = 10,
    Discard = 11,
    WriteZeroes = 13,
    SecureErase = 14,
}

/// <summary>virtio-blk status byte values (5.2.6).</summary>
public enum BlkStatus : byte
{
    Ok = 0,
    IoErr = 1,
    Unsupp = 2,
}

/// <summary>Feature bits: the device-independent ones (6) and virtio-blk's (5.2.3).</summary>
public static class VirtioFeatures
{
    public const int BlkSizeMax = 1;
    public const int BlkSegMax = 2;
    public const int BlkGeometry = 4;
    public const int BlkRo = 5;
    public const int BlkBlkSize = 6;
    public const int BlkFlush = 9;
    public const int BlkTopology = 10;
    public const int BlkConfigWce = 11;
    public const int BlkMq = 12;
    public const int BlkDiscard = 13;
    public const int BlkWriteZeroes = 14;
    public const int RingIndirectDesc = 28;
    public const int RingEventIdx = 29;
    public const int Version1 = 32;
    public const int AccessPlatform = 33;
    public const int RingPacked = 34;
    public const int InOrder = 35;

    public static ulong Bit(int bit) => 1UL << bit;
    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;

    public static string Name(int bit) => bit switch
    {
        BlkSizeMax => "VIRTIO_BLK_F_SIZE_MAX",
        BlkSegMax => "VIRTIO_BLK_F_SEG_MAX",
        BlkGeometry => "VIRTIO_BLK_F_GEOMETRY",
        BlkRo => "VIRTIO_BLK_F_RO",
        BlkBlkSize => "VIRTIO_BLK_F_BLK_SIZE",
        BlkFlush => "VIRTIO_BLK_F_FLUSH",
        BlkTopology => "VIRTIO_BLK_F_TOPOLOGY",
        BlkConfigWce => "VIRTIO_BLK_F_CONFIG_WCE",
        BlkMq => "VIRTIO_BLK_F_MQ",
        BlkDiscard => "VIRTIO_BLK_F_DISCARD",
        BlkWriteZeroes => "VIRTIO_BLK_F_WRITE_ZEROES",
        RingIndirectDesc => "VIRTIO_F_INDIRECT_DESC",
        RingEventIdx => "VIRTIO_F_EVENT_IDX",
        Version1 => "VIRTIO_F_VERSION_1",
        AccessPlatform => "VIRTIO_F_ACCESS_PLATFORM",
        RingPacked => "VIRTIO_F_RING_PACKED",
        InOrder => "VIRTIO_F_IN_ORDER",
        30 => "VHOST_USER_F_PROTOCOL_FEATURES",
        _ => $"bit {bit}",
    };

    public static string Describe(ulong features)
    {
        var names = new List<string>();
        for (var bit = 0; bit < 64; bit++)
        {
            if (Has(features, bit))
                names.Add(Name(bit));
        }
        return names.Count == 0 ? "(none)" : string.Join(" ", names);
    }
}

/// <summary>Sizes and layouts fixed by 5.2.</summary>
public static class BlkLayout
{
    public const int SectorSize = 512;          // 5.2.6: sector is always in 512-byte units
    public const int SectorShift = 9;
    public const int HeaderSize = 16;           // le32 type, le32 reserved, le64 sector
    public const int IdBytes = 20;              // 5.2.6: VIRTIO_BLK_ID_BYTES
    public const int DiscardSegmentSize = 16;   // le64 sector, le32 num_sectors, le32 flags
    public const uint SegmentFlagUnmap = 1;
    public const int ConfigSize = 60;           // through write_zeroes_may_unmap and padding
}

/// <summary>The request header (5.2.6: struct virtio_blk_req up to the data).</summary>
public readonly record struct BlkRequestHeader(uint Type, uint Reserved, ulong Sector)
{
    public static BlkRequestHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Type);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Reserved);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], Sector);
    }
}

/// <summary>One segment of a DISCARD or WRITE_ZEROES request (5.2.6: struct virtio_blk_discard_write_zeroes).</summary>
public readonly record struct BlkDiscardSegment(ulong Sector, uint NumSectors, uint Flags)
{
    public static BlkDiscardSegment Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(b),
        BinaryPrimitives.ReadUInt32LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[12..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b, Sector);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], NumSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(b[12..], Flags);
    }
}
