using System.Runtime.InteropServices;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>Reads and writes payload fields in the machine's byte order (vhost-user.rst: "All numbers are in the machine native byte order").</summary>
internal static class Field
{
    public static uint U32(ReadOnlySpan<byte> b, int offset) => MemoryMarshal.Read<uint>(b[offset..]);
    public static ulong U64(ReadOnlySpan<byte> b, int offset) => MemoryMarshal.Read<ulong>(b[offset..]);
    public static void U32(Span<byte> b, int offset, uint value) => MemoryMarshal.Write(b[offset..], in value);
    public static void U64(Span<byte> b, int offset, ulong value) => MemoryMarshal.Write(b[offset..], in value);
}

/// <summary>A single 64-bit integer payload.</summary>
public static class U64Payload
{
    public const int Length = 8;
    public static ulong Read(ReadOnlySpan<byte> b) => Field.U64(b, 0);
    public static void Write(Span<byte> b, ulong value) => Field.U64(b, 0, value);

    /// <summary>SET_VRING_KICK/CALL/ERR: bits 0-7 are the ring index.</summary>
    public const ulong VringIndexMask = 0xff;
    /// <summary>SET_VRING_KICK/CALL/ERR: bit 8 says no descriptor came with the message.</summary>
    public const ulong InvalidFdFlag = 0x100;
}

/// <summary>A vring state description: index and num (SET_VRING_NUM/BASE/ENABLE, GET_VRING_BASE).</summary>
public readonly record struct VringState(uint Index, uint Num)
{
    public const int Length = 8;
    public static VringState Read(ReadOnlySpan<byte> b) => new(Field.U32(b, 0), Field.U32(b, 4));

    public void Write(Span<byte> b)
    {
        Field.U32(b, 0, Index);
        Field.U32(b, 4, Num);
    }
}

/// <summary>
/// A vring address description (SET_VRING_ADDR). Descriptor, used and available addresses are
/// front-end virtual ("user") addresses; log is a guest-physical address for dirty logging.
/// </summary>
public readonly record struct VringAddress(uint Index, uint Flags, ulong Descriptor, ulong Used, ulong Available, ulong Log)
{
    public const int Length = 40;
    /// <summary>VHOST_VRING_F_LOG: log writes to the used ring.</summary>
    public const uint FlagLog = 0x1;

    public static VringAddress Read(ReadOnlySpan<byte> b) => new(
        Field.U32(b, 0), Field.U32(b, 4), Field.U64(b, 8), Field.U64(b, 16), Field.U64(b, 24), Field.U64(b, 32));

    public void Write(Span<byte> b)
    {
        Field.U32(b, 0, Index);
        Field.U32(b, 4, Flags);
        Field.U64(b, 8, Descriptor);
        Field.U64(b, 16, Used);
        Field.U64(b, 24, Available);
        Field.U64(b, 32, Log);
    }
}

/// <summary>One memory region: guest address, size, front-end virtual address, offset into the descriptor it is mapped from.</summary>
public readonly record struct MemoryRegionDescription(ulong GuestAddress, ulong Size, ulong UserAddress, ulong MmapOffset)
{
    public const int Length = 32;

    public static MemoryRegionDescription Read(ReadOnlySpan<byte> b) => new(Field.U64(b, 0), Field.U64(b, 8), Field.U64(b, 16), Field.U64(b, 24));

    public void Write(Span<byte> b)
    {
        Field.U64(b, 0, GuestAddress);
        Field.U64(b, 8, Size);
        Field.U64(b, 16, UserAddress);
        Field.U64(b, 24, MmapOffset);
    }

    public override string ToString() =>
        $"guest 0x{GuestAddress:x}..0x{GuestAddress + Size - 1:x} ({(Size >= 1 << 20 ? $"{Size >> 20} MiB" : $"{Size >> 10} KiB")}), user 0x{UserAddress:x}, offset 0x{MmapOffset:x}";
}

/// <summary>SET_MEM_TABLE payload: u32 count, u32 padding, then up to 8 regions (one descriptor each).</summary>
public static class MemoryTablePayload
{
    public const int HeaderLength = 8;
    /// <summary>VHOST_MEMORY_BASELINE_NREGIONS.</summary>
    public const int MaxRegions = 8;

    public static int LengthFor(int regions) => HeaderLength + regions * MemoryRegionDescription.Length;

    public static uint Count(ReadOnlySpan<byte> b) => Field.U32(b, 0);

    public static MemoryRegionDescription Region(ReadOnlySpan<byte> b, int i) =>
        MemoryRegionDescription.Read(b[(HeaderLength + i * MemoryRegionDescription.Length)..]);

    public static int Write(Span<byte> b, ReadOnlySpan<MemoryRegionDescription> regions)
    {
        Field.U32(b, 0, (uint)regions.Length);
        Field.U32(b, 4, 0);
        for (var i = 0; i < regions.Length; i++)
            regions[i].Write(b[(HeaderLength + i * MemoryRegionDescription.Length)..]);
        return LengthFor(regions.Length);
    }
}

/// <summary>ADD_MEM_REG / REM_MEM_REG payload: u64 padding, then one region.</summary>
public static class SingleRegionPayload
{
    public const int Length = 8 + MemoryRegionDescription.Length;
    public static MemoryRegionDescription Read(ReadOnlySpan<byte> b) => MemoryRegionDescription.Read(b[8..]);

    public static void Write(Span<byte> b, MemoryRegionDescription region)
    {
        Field.U64(b, 0, 0);
        region.Write(b[8..]);
    }
}

/// <summary>GET_CONFIG / SET_CONFIG payload header: offset, size, flags; the config bytes follow.</summary>
public readonly record struct ConfigSpaceHeader(uint Offset, uint Size, uint Flags)
{
    public const int Length = 12;
    /// <summary>VHOST_USER_MAX_CONFIG_SIZE.</summary>
    public const int MaxConfigSize = 256;
    public const uint FlagWritable = 0;
    public const uint FlagMigration = 1;

    public static ConfigSpaceHeader Read(ReadOnlySpan<byte> b) => new(Field.U32(b, 0), Field.U32(b, 4), Field.U32(b, 8));

    public void Write(Span<byte> b)
    {
        Field.U32(b, 0, Offset);
        Field.U32(b, 4, Size);
        Field.U32(b, 8, Flags);
    }
}

/// <summary>GET/SET_INFLIGHT_FD payload: mmap size, mmap offset, queue count, queue size.</summary>
public readonly record struct InflightDescription(ulong MmapSize, ulong MmapOffset, ushort NumQueues, ushort QueueSize)
{
    public const int Length = 24; // 8 + 8 + 2 + 2, padded to 8 as the C struct is
    public const int FieldsLength = 20; // without the padding

    public static InflightDescription Read(ReadOnlySpan<byte> b) => new(
        Field.U64(b, 0), Field.U64(b, 8), MemoryMarshal.Read<ushort>(b[16..]), MemoryMarshal.Read<ushort>(b[18..]));

    public void Write(Span<byte> b)
    {
        b[..Length].Clear();
        Field.U64(b, 0, MmapSize);
        Field.U64(b, 8, MmapOffset);
        var n = NumQueues;
        var q = QueueSize;
        MemoryMarshal.Write(b[16..], in n);
        MemoryMarshal.Write(b[18..], in q);
    }
}

