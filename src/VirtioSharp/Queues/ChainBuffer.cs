namespace VirtioSharp.Queues;

/// <summary>One buffer of a descriptor chain, already checked and translated to host memory.</summary>
public struct ChainBuffer
{
    public ulong Address;
    public uint Length;
    public bool Writable;
    /// <summary>Host pointer to the buffer; 0 when the range is not inside guest memory.</summary>
    public nint Host;

    /// <summary>Records one descriptor's buffer; false when its range is not inside guest memory (Host is then 0).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public bool Set(Memory.GuestMemory memory, ulong address, uint length, bool writable)
    {
        Address = address;
        Length = length;
        Writable = writable;
        var inside = memory.TryTranslate(address, length, out var host);
        Host = inside ? host : 0;
        return inside;
    }
}

/// <summary>Why a chain could not be used as the driver laid it out (device-observable driver errors).</summary>
public enum ChainError
{
    None,
    /// <summary>2.7.5.2: next points past the descriptor table.</summary>
    NextOutOfRange,
    /// <summary>2.7.5.3.1 / 2.7.13.1: the chain is longer than the queue size (or loops).</summary>
    ChainTooLong,
    /// <summary>2.7.4.2: a device-readable descriptor follows a device-writable one.</summary>
    ReadableAfterWritable,
    /// <summary>2.7.5.3.1: VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC.</summary>
    IndirectNotNegotiated,
    /// <summary>2.7.5.3.1: INDIRECT and NEXT set together.</summary>
    IndirectWithNext,
    /// <summary>2.7.5.3.1: INDIRECT inside an indirect table.</summary>
    NestedIndirect,
    /// <summary>2.7.5.3.1: indirect table length is zero or not a multiple of 16.</summary>
    IndirectBadLength,
    /// <summary>The indirect table itself is not inside guest memory.</summary>
    IndirectOutOfMemory,
    /// <summary>A buffer is not inside guest memory (the chain's shape is intact).</summary>
    BufferOutOfMemory,
}

public static class ChainErrorText
{
    /// <summary>The section of the ring format's rules the error breaks.</summary>
    public static string Section(this ChainError e, VirtqueueFormat format) => format == VirtqueueFormat.Packed ? PackedSection(e) : e.Section();

    private static string PackedSection(ChainError e) => e switch
    {
        ChainError.ChainTooLong or ChainError.ReadableAfterWritable => "2.8.17",
        ChainError.IndirectNotNegotiated or ChainError.IndirectWithNext => "2.8.19",
        ChainError.NestedIndirect or ChainError.IndirectBadLength => "2.8.7",
        ChainError.IndirectOutOfMemory or ChainError.BufferOutOfMemory => "2.8.4",
        _ => "2.8",
    };

    public static string Section(this ChainError e) => e switch
    {
        ChainError.NextOutOfRange => "2.7.5.2",
        ChainError.ChainTooLong => "2.7.5.3.1",
        ChainError.ReadableAfterWritable => "2.7.4.2",
        ChainError.IndirectNotNegotiated or ChainError.IndirectWithNext or ChainError.NestedIndirect or ChainError.IndirectBadLength => "2.7.5.3.1",
        ChainError.IndirectOutOfMemory or ChainError.BufferOutOfMemory => "2.7.5",
        _ => "",
    };

    /// <summary>What the driver should have done instead (the "expected" half of a breach report).</summary>
    public static string Expected(this ChainError e) => e switch
    {
        ChainError.NextOutOfRange => "a next field below the size of its descriptor table",
        ChainError.ChainTooLong => "a chain no longer than the queue size, and no loop (2.7.5.2)",
        ChainError.ReadableAfterWritable => "every device-readable descriptor before the first device-writable one",
        ChainError.IndirectNotNegotiated => "VIRTQ_DESC_F_INDIRECT only once VIRTIO_F_INDIRECT_DESC is negotiated",
        ChainError.IndirectWithNext => "VIRTQ_DESC_F_INDIRECT without VIRTQ_DESC_F_NEXT",
        ChainError.NestedIndirect => "no VIRTQ_DESC_F_INDIRECT inside an indirect table",
        ChainError.IndirectBadLength => "an indirect table length that is a non-zero multiple of 16",
        ChainError.IndirectOutOfMemory => "an indirect table inside guest memory",
        ChainError.BufferOutOfMemory => "every buffer inside guest memory",
        _ => "a well-formed descriptor chain",
    };

    public static string Describe(this ChainError e) => e switch
    {
        ChainError.NextOutOfRange => "descriptor next field points past the descriptor table",
        ChainError.ChainTooLong => "descriptor chain is longer than the queue size (loop?)",
        ChainError.ReadableAfterWritable => "device-readable descriptor after a device-writable one",
        ChainError.IndirectNotNegotiated => "VIRTQ_DESC_F_INDIRECT used but VIRTIO_F_INDIRECT_DESC was not negotiated",
        ChainError.IndirectWithNext => "VIRTQ_DESC_F_INDIRECT and VIRTQ_DESC_F_NEXT set together",
        ChainError.NestedIndirect => "VIRTQ_DESC_F_INDIRECT inside an indirect table",
        ChainError.IndirectBadLength => "indirect table length is zero or not a multiple of 16",
        ChainError.IndirectOutOfMemory => "indirect table lies outside guest memory",
        ChainError.BufferOutOfMemory => "buffer lies outside guest memory",
        _ => "ok",
    };
}

/// <summary>A chain taken from the available ring. Buffers live in the queue's scratch array until the next pop.</summary>
public readonly ref struct DescriptorChain
{
    public DescriptorChain(ushort head, ReadOnlySpan<ChainBuffer> buffers, ChainError error, int errorDescriptor, VirtqueueFormat format = VirtqueueFormat.Split)
    {
        Format = format;
        Head = head;
        Buffers = buffers;
        Error = error;
        ErrorDescriptor = errorDescriptor;
    }

    /// <summary>The chain's token: the head descriptor (split) or the buffer id (packed, 2.8.6).</summary>
    public ushort Head { get; }
    /// <summary>The ring format it came from, so errors name the right section.</summary>
    public VirtqueueFormat Format { get; }
    public ReadOnlySpan<ChainBuffer> Buffers { get; }
    public ChainError Error { get; }
    /// <summary>Index of the descriptor the error was found at (in the table it belongs to), or -1.</summary>
    public int ErrorDescriptor { get; }
    /// <summary>The chain's shape is broken, so no status byte can be trusted to exist.</summary>
    public bool IsStructurallyBroken => Error is not (ChainError.None or ChainError.BufferOutOfMemory or ChainError.ReadableAfterWritable);
}

/// <summary>Outcome of asking the device queue for the next available chain.</summary>
public enum PopResult
{
    /// <summary>Nothing new in the available ring.</summary>
    Empty,
    /// <summary>A chain was taken (it may still carry a <see cref="ChainError"/>).</summary>
    Chain,
    /// <summary>The ring itself is corrupt; the device must enter DEVICE_NEEDS_RESET (2.1.2).</summary>
    RingCorrupt,
}

/// <summary>Why a ring was judged corrupt.</summary>
public enum RingError
{
    None,
    /// <summary>2.7.13.3: avail idx ran more than the queue size ahead of the device.</summary>
    AvailIndexTooFarAhead,
    /// <summary>2.7.6: a ring entry names a descriptor past the table.</summary>
    HeadOutOfRange,
    /// <summary>2.7.13.2: a head the device has not yet returned was offered again.</summary>
    HeadInFlight,
    /// <summary>2.8.1: the descriptor at the device's position has AVAIL and USED both equal to the wrap counter (flags went backwards).</summary>
    PackedFlagsInconsistent,
    /// <summary>2.8.17: a list's first descriptor made available before a later one (not marked available in the list's lap).</summary>
    PackedDescriptorNotAvailable,
    /// <summary>2.8.17: a list runs past the ring's free slots, so its buffer id cannot be found.</summary>
    PackedChainTooLong,
    /// <summary>2.8.16: a descriptor made available over a slot the device has not yet used.</summary>
    PackedRingOverrun,
    /// <summary>2.8.21.1: a buffer id still in flight was made available again.</summary>
    PackedBufferIdInFlight,
}

/// <summary>The two virtqueue formats (2.7 split, 2.8 packed).</summary>
public enum VirtqueueFormat
{
    Split,
    Packed,
}
