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
