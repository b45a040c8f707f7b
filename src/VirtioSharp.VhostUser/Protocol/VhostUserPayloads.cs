using System.Buffers.Binary;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>"A vring state description": index, num.</summary>
public readonly record struct VringState(uint Index, uint Num)
{
    public const int Size = 8;

    public static VringState Read(ReadOnlySpan<byte> b) =>
        new(BinaryPrimitives.ReadUInt32LittleEndian(b), BinaryPrimitives.ReadUInt32LittleEndian(b[4..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Num);
    }
}

/// <summary>
/// "A vring address description": ring addresses are front-end user (virtual) addresses
/// unless an IOMMU was negotiated.
/// </summary>
public readonly record struct VringAddress(uint Index, uint Flags, ulong Descriptor, ulong Used, ulong Available, ulong Log)
{
    public const int Size = 40;
    /// <summary>VHOST_VRING_F_LOG: log writes to the used ring.</summary>
    public const uint FlagLog = 1;

    public static VringAddress Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[24..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[32..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Index);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Flags);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], Descriptor);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], Used);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], Available);
        BinaryPrimitives.WriteUInt64LittleEndian(b[32..], Log);
    }
}

/// <summary>One entry of "Memory regions description": guest address, size, user address, mmap offset.</summary>
public readonly record struct MemoryRegionDescription(ulong GuestAddress, ulong Size, ulong UserAddress, ulong MmapOffset)
{
    public const int EncodedSize = 32;

    public static MemoryRegionDescription Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt64LittleEndian(b),
        BinaryPrimitives.ReadUInt64LittleEndian(b[8..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[16..]),
        BinaryPrimitives.ReadUInt64LittleEndian(b[24..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(b, GuestAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(b[8..], Size);
        BinaryPrimitives.WriteUInt64LittleEndian(b[16..], UserAddress);
        BinaryPrimitives.WriteUInt64LittleEndian(b[24..], MmapOffset);
    }
}

/// <summary>SET_MEM_TABLE's payload: a count, padding, then up to eight regions.</summary>
public static class MemoryTable
{
    public static int EncodedSize(int regions) => 8 + regions * MemoryRegionDescription.EncodedSize;

    public static int Write(Span<byte> b, ReadOnlySpan<MemoryRegionDescription> regions)
    {
        if (regions.Length > VhostUserConstants.MaxMemoryRegions)
            throw new ArgumentException($"at most {VhostUserConstants.MaxMemoryRegions} memory regions");
        BinaryPrimitives.WriteUInt32LittleEndian(b, (uint)regions.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], 0);
        for (var i = 0; i < regions.Length; i++)
            regions[i].Write(b[(8 + i * MemoryRegionDescription.EncodedSize)..]);
        return EncodedSize(regions.Length);
    }

    /// <summary>Parses the table; false when the count or the payload size is wrong.</summary>
    public static bool TryRead(ReadOnlySpan<byte> b, List<MemoryRegionDescription> regions)
    {
        if (b.Length < 8)
            return false;
        var count = BinaryPrimitives.ReadUInt32LittleEndian(b);
        if (count > VhostUserConstants.MaxMemoryRegions || b.Length < EncodedSize((int)count))
            return false;
        for (var i = 0; i < (int)count; i++)
            regions.Add(MemoryRegionDescription.Read(b[(8 + i * MemoryRegionDescription.EncodedSize)..]));
        return true;
    }
}

/// <summary>"Virtio device config space": offset, size, flags, then size bytes.</summary>
public readonly record struct ConfigSpaceHeader(uint Offset, uint Size, uint Flags)
{
    public static ConfigSpaceHeader Read(ReadOnlySpan<byte> b) => new(
        BinaryPrimitives.ReadUInt32LittleEndian(b),
        BinaryPrimitives.ReadUInt32LittleEndian(b[4..]),
        BinaryPrimitives.ReadUInt32LittleEndian(b[8..]));

    public void Write(Span<byte> b)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(b, Offset);
        BinaryPrimitives.WriteUInt32LittleEndian(b[4..], Size);
        BinaryPrimitives.WriteUInt32LittleEndian(b[8..], Flags);
    }
}
