using System.Buffers.Binary;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Support;

/// <summary>One buffer of a hand-built chain: guest address, length, device-writable or not.</summary>
public readonly record struct Buf(ulong Address, uint Length, bool Writable = false)
{
    public static Buf R(ulong address, uint length) => new(address, length, false);
    public static Buf W(ulong address, uint length) => new(address, length, true);
    public static Buf New(ulong address, uint length, bool writable) => new(address, length, writable);
}

/// <summary>
/// A split virtqueue laid out by hand in its own guest RAM. Tests play the driver through it:
/// they write descriptors and the available ring byte by byte (so they can write anything,
/// including what a broken driver would), and read the used ring as a driver would.
/// </summary>
public sealed class RingBuilder : IDisposable
{
    public const ulong RamBase = 0x4000_0000;
    private ulong _nextData;
    private ushort _nextDescriptor;

    public RingBuilder(int queueSize, ulong ramSize = 1 << 20)
    {
        Ram = new GuestRam(RamBase, ramSize);
        Size = queueSize;
        var layout = SplitQueueLayout.For(queueSize);
        Desc = RamBase + layout.DescriptorTableOffset;
        Avail = RamBase + layout.AvailRingOffset;
        Used = RamBase + layout.UsedRingOffset;
        _nextData = RamBase + SplitQueueLayout.AlignUp(layout.TotalSize, 4096);
    }

    public GuestRam Ram { get; }
    public GuestMemory Memory => Ram.Memory;
    public int Size { get; }
    public ulong Desc { get; }
    public ulong Avail { get; }
    public ulong Used { get; }
    /// <summary>First guest address past the end of RAM.</summary>
    public ulong RamEnd => Ram.Base + Ram.Size;

    public SplitDeviceQueue Device(bool eventIdx = false, bool indirect = false, ushort startIndex = 0)
    {
        var q = SplitDeviceQueue.Create(0, Size, Memory, Desc, Avail, Used, eventIdx, indirect, out var error, startIndex);
        return q ?? throw new InvalidOperationException(error);
    }

    public SplitDriverQueue Driver(bool eventIdx = false) => new(0, Size, Memory, Desc, Avail, Used, eventIdx);

    /// <summary>Bump-allocates zeroed guest memory after the rings.</summary>
    public ulong Alloc(int length, int alignment = 16)
    {
        var start = SplitQueueLayout.AlignUp(_nextData, (ulong)alignment);
        if (start + (ulong)length > RamEnd)
            throw new InvalidOperationException("test RAM exhausted");
        _nextData = start + (ulong)length;
        Span(start, length).Clear();
        return start;
    }

    /// <summary>Allocates a buffer holding <paramref name="bytes"/>.</summary>
    public ulong Put(ReadOnlySpan<byte> bytes, int alignment = 16)
    {
        var a = Alloc(bytes.Length, alignment);
        bytes.CopyTo(Span(a, bytes.Length));
        return a;
    }

    public Span<byte> Span(ulong address, int length) => Memory.GetSpan(address, length);

    public ushort ReadU16(ulong address) => BinaryPrimitives.ReadUInt16LittleEndian(Span(address, 2));
    public void WriteU16(ulong address, ushort value) => BinaryPrimitives.WriteUInt16LittleEndian(Span(address, 2), value);
    public uint ReadU32(ulong address) => BinaryPrimitives.ReadUInt32LittleEndian(Span(address, 4));

    // --- descriptor table (2.7.5) ---

    public void WriteDescriptor(int index, ulong address, uint length, ushort flags, ushort next) =>
        WriteDescriptorAt(Desc + (ulong)index * 16, address, length, flags, next);

    /// <summary>Writes one struct virtq_desc at any guest address (a ring slot or an indirect table entry).</summary>
    public void WriteDescriptorAt(ulong where, ulong address, uint length, ushort flags, ushort next)
    {
        var d = Span(where, 16);
        BinaryPrimitives.WriteUInt64LittleEndian(d, address);
        BinaryPrimitives.WriteUInt32LittleEndian(d[8..], length);
        BinaryPrimitives.WriteUInt16LittleEndian(d[12..], flags);
        BinaryPrimitives.WriteUInt16LittleEndian(d[14..], next);
    }

    public (ulong Address, uint Length, ushort Flags, ushort Next) ReadDescriptor(int index)
    {
        var d = Span(Desc + (ulong)index * 16, 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(d), BinaryPrimitives.ReadUInt32LittleEndian(d[8..]),
            BinaryPrimitives.ReadUInt16LittleEndian(d[12..]), BinaryPrimitives.ReadUInt16LittleEndian(d[14..]));
    }

    /// <summary>Writes <paramref name="buffers"/> as a NEXT-linked chain in descriptors first, first+1, ... (mod size); returns the head.</summary>
    public ushort Chain(int first, params Buf[] buffers)
    {
        for (var i = 0; i < buffers.Length; i++)
        {
            var index = (first + i) % Size;
            var last = i == buffers.Length - 1;
            var flags = (ushort)((buffers[i].Writable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext));
            WriteDescriptor(index, buffers[i].Address, buffers[i].Length, flags, last ? (ushort)0 : (ushort)((index + 1) % Size));
        }
        return (ushort)(first % Size);
    }

    /// <summary>Writes a chain into the next free descriptors (round robin) and returns its head.</summary>
    public ushort Chain(params Buf[] buffers)
    {
        if (buffers.Length > Size)
            throw new ArgumentException("chain longer than the queue");
        var head = Chain(_nextDescriptor, buffers);
        _nextDescriptor = (ushort)((_nextDescriptor + buffers.Length) % Size);
        return head;
    }

    /// <summary>Writes an indirect table (2.7.5.3) of <paramref name="buffers"/> into guest memory; returns its address.</summary>
    public ulong IndirectTable(params Buf[] buffers)
    {
        var table = Alloc(buffers.Length * 16, 16);
        for (var i = 0; i < buffers.Length; i++)
        {
            var last = i == buffers.Length - 1;
            var flags = (ushort)((buffers[i].Writable ? SplitRing.DescFWrite : 0) | (last ? 0 : SplitRing.DescFNext));
            WriteDescriptorAt(table + (ulong)i * 16, buffers[i].Address, buffers[i].Length, flags, last ? (ushort)0 : (ushort)(i + 1));
        }
        return table;
    }

    // --- available ring (2.7.6), written as the driver ---

    public ushort AvailFlags { get => ReadU16(Avail); set => WriteU16(Avail, value); }
    public ushort AvailIdx { get => ReadU16(Avail + 2); set => WriteU16(Avail + 2, value); }
    public ushort AvailSlot(int slot) => ReadU16(Avail + 4 + 2 * (ulong)slot);
    public void SetAvailSlot(int slot, ushort head) => WriteU16(Avail + 4 + 2 * (ulong)slot, head);
    /// <summary>used_event, after ring[Size] (2.7.6, only with VIRTIO_F_EVENT_IDX).</summary>
    public ushort UsedEvent { get => ReadU16(Avail + 4 + 2 * (ulong)Size); set => WriteU16(Avail + 4 + 2 * (ulong)Size, value); }

    /// <summary>2.7.13.2 / 2.7.13.3: ring[idx % size] = head for each head, then idx += count.</summary>
    public void Offer(params ushort[] heads)
    {
        var idx = AvailIdx;
        foreach (var h in heads)
        {
            SetAvailSlot(idx % Size, h);
            idx++;
        }
        AvailIdx = idx;
    }

    // --- used ring (2.7.8), read as the driver ---

    public ushort UsedFlags { get => ReadU16(Used); set => WriteU16(Used, value); }
    public ushort UsedIdx { get => ReadU16(Used + 2); set => WriteU16(Used + 2, value); }
    /// <summary>avail_event, after ring[Size] (2.7.8, only with VIRTIO_F_EVENT_IDX).</summary>
    public ushort AvailEvent { get => ReadU16(Used + 4 + 8 * (ulong)Size); set => WriteU16(Used + 4 + 8 * (ulong)Size, value); }

    public (uint Id, uint Length) UsedElement(int slot)
    {
        var e = Span(Used + 4 + 8 * (ulong)(slot % Size), 8);
        return (BinaryPrimitives.ReadUInt32LittleEndian(e), BinaryPrimitives.ReadUInt32LittleEndian(e[4..]));
    }

    public void WriteUsedElement(int slot, uint id, uint length)
    {
        var e = Span(Used + 4 + 8 * (ulong)(slot % Size), 8);
        BinaryPrimitives.WriteUInt32LittleEndian(e, id);
        BinaryPrimitives.WriteUInt32LittleEndian(e[4..], length);
    }

    public void Dispose() => Ram.Dispose();
}
