using System.Buffers.Binary;

namespace VirtioSharp.Block;

/// <summary>The device configuration layout (5.2.4: struct virtio_blk_config), little-endian.</summary>
public sealed record BlkConfig
{
    public ulong Capacity { get; init; }            // in 512-byte sectors
    public uint SizeMax { get; init; }
    public uint SegMax { get; init; }
    public uint BlkSize { get; init; } = 512;
    public byte PhysicalBlockExp { get; init; }
    public ushort NumQueues { get; init; } = 1;
    public uint MaxDiscardSectors { get; init; }
    public uint MaxDiscardSeg { get; init; }
    public uint DiscardSectorAlignment { get; init; }
    public uint MaxWriteZeroesSectors { get; init; }
    public uint MaxWriteZeroesSeg { get; init; }
    public byte WriteZeroesMayUnmap { get; init; }

    // 5.2.4 offsets.
    public const int OffCapacity = 0, OffSizeMax = 8, OffSegMax = 12, OffGeometry = 16, OffBlkSize = 20,
        OffTopology = 24, OffWriteback = 32, OffNumQueues = 34, OffMaxDiscardSectors = 36, OffMaxDiscardSeg = 40,
        OffDiscardSectorAlignment = 44, OffMaxWriteZeroesSectors = 48, OffMaxWriteZeroesSeg = 52, OffWriteZeroesMayUnmap = 56;

    public byte[] ToBytes()
    {
        var b = new byte[BlkLayout.ConfigSize];
        BinaryPrimitives.WriteUInt64LittleEndian(b.AsSpan(OffCapacity), Capacity);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffSizeMax), SizeMax);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffSegMax), SegMax);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffBlkSize), BlkSize);
        b[OffTopology] = PhysicalBlockExp;
        BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(OffNumQueues), NumQueues);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffMaxDiscardSectors), MaxDiscardSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffMaxDiscardSeg), MaxDiscardSeg);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffDiscardSectorAlignment), DiscardSectorAlignment);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffMaxWriteZeroesSectors), MaxWriteZeroesSectors);
        BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(OffMaxWriteZeroesSeg), MaxWriteZeroesSeg);
        b[OffWriteZeroesMayUnmap] = WriteZeroesMayUnmap;
        return b;
    }

    public static BlkConfig Parse(ReadOnlySpan<byte> b)
    {
        if (b.Length < BlkLayout.ConfigSize)
        {
            Span<byte> padded = stackalloc byte[BlkLayout.ConfigSize];
            b.CopyTo(padded);
            return Parse(padded);
        }
        return new BlkConfig
        {
            Capacity = BinaryPrimitives.ReadUInt64LittleEndian(b[OffCapacity..]),
            SizeMax = BinaryPrimitives.ReadUInt32LittleEndian(b[OffSizeMax..]),
            SegMax = BinaryPrimitives.ReadUInt32LittleEndian(b[OffSegMax..]),
            BlkSize = BinaryPrimitives.ReadUInt32LittleEndian(b[OffBlkSize..]),
            PhysicalBlockExp = b[OffTopology],
            NumQueues = BinaryPrimitives.ReadUInt16LittleEndian(b[OffNumQueues..]),
            MaxDiscardSectors = BinaryPrimitives.ReadUInt32LittleEndian(b[OffMaxDiscardSectors..]),
            MaxDiscardSeg = BinaryPrimitives.ReadUInt32LittleEndian(b[OffMaxDiscardSeg..]),
            DiscardSectorAlignment = BinaryPrimitives.ReadUInt32LittleEndian(b[OffDiscardSectorAlignment..]),
            MaxWriteZeroesSectors = BinaryPrimitives.ReadUInt32LittleEndian(b[OffMaxWriteZeroesSectors..]),
            MaxWriteZeroesSeg = BinaryPrimitives.ReadUInt32LittleEndian(b[OffMaxWriteZeroesSeg..]),
            WriteZeroesMayUnmap = b[OffWriteZeroesMayUnmap],
        };
    }
}
