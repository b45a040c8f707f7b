using System.Runtime.CompilerServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// Reports what one half of a packed virtqueue (2.8) does as <see cref="RingEvent"/>s: descriptors
/// written and read with their AVAIL/USED/NEXT/WRITE/INDIRECT flags, used descriptors written in
/// place, both ring wrap counters flipping, both event suppression structures written and read, and
/// each notification or interrupt decision with its reason. A queue holds one only while someone
/// records, so a queue nobody watches pays a null check per site. Guest memory it shows is copied
/// out for display only. Used by the queue's one thread.
/// </summary>
public sealed unsafe class PackedQueueRecorder
{
    private const int DataPreview = 64;
    private readonly ITraceSink _sink;
    private readonly GuestMemory _memory;
    private readonly int _queue;
    private readonly int _size;
    private readonly bool _eventIdx;
    private readonly byte* _ring, _driverEvent, _deviceEvent;
    private readonly ulong _desc, _driver, _device;
    private readonly Dictionary<ushort, List<(ulong Addr, uint Len, bool Writable)>> _chains = [];
    private readonly List<(int Slot, ulong Addr, uint Len, ushort Id, ushort Flags, ulong Table)> _walk = new(4);
    private uint _lastDriverEvent = uint.MaxValue, _lastDeviceEvent = uint.MaxValue;

    /// <summary>
    /// <paramref name="ring"/>, <paramref name="driverEvent"/> and <paramref name="deviceEvent"/> are the
    /// queue's host pointers; <paramref name="desc"/>, <paramref name="driver"/> and <paramref name="device"/>
    /// the guest addresses shown. The device half announces the queue's geometry.
    /// </summary>
    public PackedQueueRecorder(ITraceSink sink, GuestMemory memory, int queue, int size, bool eventIdx, bool indirect,
        nint ring, nint driverEvent, nint deviceEvent, ulong desc, ulong driver, ulong device, bool announce)
    {
        _sink = sink;
        _memory = memory;
        _queue = queue;
        _size = size;
        _eventIdx = eventIdx;
        _ring = (byte*)ring;
        _driverEvent = (byte*)driverEvent;
        _deviceEvent = (byte*)deviceEvent;
        _desc = desc;
        _driver = driver;
        _device = device;
        if (announce && sink.Active)
            sink.Event(RingEvents.QueueSetup(queue, size, desc, driver, device, eventIdx, indirect, "packed"));
    }

    public bool Active => _sink.Active;
    private ulong SlotAddress(int slot) => _desc + (ulong)slot * PackedRing.DescriptorSize;

    private (ulong Addr, uint Len, ushort Id, ushort Flags) Descriptor(int slot)
    {
        var d = _ring + slot * PackedRing.DescriptorSize;
        return (Unsafe.ReadUnaligned<ulong>(d), Unsafe.ReadUnaligned<uint>(d + 8), Unsafe.ReadUnaligned<ushort>(d + 12), Volatile.Read(ref *(ushort*)(d + 14)));
    }

    private static (ushort OffWrap, ushort Flags) ReadEvent(byte* e) => (Volatile.Read(ref *(ushort*)e), Volatile.Read(ref *(ushort*)(e + 2)));

    // ------------------------------------------------------------------ driver half

    /// <summary>
    /// A list of <paramref name="slots"/> descriptors was written from slot <paramref name="first"/>, its
    /// first flags last; <paramref name="wrapNow"/> is the Driver Ring Wrap Counter after it.
    /// </summary>
    public void ListWritten(int first, int slots, ushort id, bool wrapNow, ushort firstFlags)
    {
        if (!_sink.Active)
            return;
        var wrapped = first + slots >= _size;
        var wrap = wrapped ? !wrapNow : wrapNow; // the counter the list was written with
        for (var i = 0; i < slots; i++)
        {
            var slot = (first + i) % _size;
            var d = Descriptor(slot);
            var role = i == 0 ? "header" : i == slots - 1 ? "status" : "data";
            // 2.8.21.1: descriptors after the ring's last slot carry the flipped counter.
            var w = first + i >= _size ? !wrap : wrap;
            _sink.Event(PackedRingEvents.DescriptorWrite(_queue, id, slot, d.Addr, d.Len, i == 0 ? firstFlags : d.Flags, w, role, held: i == 0));
        }
        _sink.Event(PackedRingEvents.DescriptorFlags(_queue, id, first, firstFlags, wrap, SlotAddress(first) + 14));
        if (wrapped)
            _sink.Event(PackedRingEvents.WrapCounter("driver", _queue, "driver", wrapNow, (first + slots) % _size, id));
    }

    /// <summary>One descriptor with VIRTQ_DESC_F_INDIRECT at <paramref name="slot"/>, and the table it points at (read back).</summary>
    public void IndirectWritten(int slot, ushort id, ulong table, int count, bool wrapNow, ushort flags)
    {
        if (!_sink.Active)
            return;
        var wrapped = slot + 1 >= _size;
        var d = Descriptor(slot);
        _sink.Event(PackedRingEvents.DescriptorWrite(_queue, id, slot, d.Addr, d.Len, flags, wrapped ? !wrapNow : wrapNow, "table", held: false));
        if (_memory.TryTranslate(table, (ulong)count * PackedRing.DescriptorSize, out var host))
        {
            for (var i = 0; i < count; i++)
            {
                var e = (byte*)host + i * PackedRing.DescriptorSize;
                var role = i == 0 ? "header" : i == count - 1 ? "status" : "data";
                _sink.Event(PackedRingEvents.DescriptorWrite(_queue, id, i, Unsafe.ReadUnaligned<ulong>(e), Unsafe.ReadUnaligned<uint>(e + 8),
                    Unsafe.ReadUnaligned<ushort>(e + 14), false, role, held: false, table));
            }
        }
        if (wrapped)
            _sink.Event(PackedRingEvents.WrapCounter("driver", _queue, "driver", wrapNow, 0, id));
    }

    /// <summary>The driver read the Device Event Suppression structure after making <paramref name="added"/> slots available.</summary>
    public void Published(ushort offWrap, ushort flags, int added, bool notify)
    {
        if (!_sink.Active)
            return;
        _sink.Event(PackedRingEvents.EventSuppression("driver", _queue, "device", offWrap, flags, write: false, _device));
        _sink.Event(PackedRingEvents.Notification(_queue, notify, PackedRingEvents.Reason(offWrap, flags, _eventIdx, added, _size, notify, "made available")));
    }

    /// <summary>The driver took the used descriptor at <paramref name="slot"/>; its list had <paramref name="slots"/> slots.</summary>
    public void UsedTaken(int slot, ushort id, uint len, ushort flags, bool wrap, int slots, int next)
    {
        if (!_sink.Active)
            return;
        _sink.Event(PackedRingEvents.UsedRead(_queue, id, slot, len, flags, wrap, slots, next, SlotAddress(slot)));
        if (next < slot || slots == _size)
            _sink.Event(PackedRingEvents.WrapCounter("driver", _queue, "device", !wrap, next, id));
    }

    /// <summary>The driver wrote its Driver Event Suppression structure (read back; shown when it changed).</summary>
    public void DriverEventWritten() => EventWritten("driver", _driverEvent, _driver, ref _lastDriverEvent);

    // ------------------------------------------------------------------ device half

    /// <summary>The device read descriptor <paramref name="position"/> of a list (0: the first) at <paramref name="slot"/>.</summary>
    public void DescriptorRead(int position, int slot, ulong addr, uint len, ushort id, ushort flags)
    {
        if (!_sink.Active)
            return;
        if (position == 0)
            _walk.Clear();
        if (_walk.Count < RecordedChain.MaxBuffers)
            _walk.Add((slot, addr, len, id, flags, 0));
    }

    /// <summary>The device read entry <paramref name="entry"/> of the indirect table at <paramref name="table"/>.</summary>
    public void IndirectEntryRead(ulong table, int entry, ulong addr, uint len, ushort flags)
    {
        if (!_sink.Active)
            return;
        if (_walk.Count < RecordedChain.MaxBuffers)
            _walk.Add((entry, addr, len, 0, flags, table));
    }

    /// <summary>
    /// The device took a list of <paramref name="slots"/> slots from <paramref name="first"/> with buffer
    /// id <paramref name="id"/>; <paramref name="wrap"/> / <paramref name="wrapAfter"/>: the Driver Ring
    /// Wrap Counter it expected before and after. <paramref name="buffers"/>: the chain as checked.
    /// </summary>
    public void Popped(int first, int slots, ushort id, bool wrap, bool wrapAfter, ReadOnlySpan<ChainBuffer> buffers)
    {
        if (!_sink.Active)
            return;
        var firstFlags = _walk.Count > 0 ? _walk[0].Flags : (ushort)0;
        _sink.Event(PackedRingEvents.ListTaken(_queue, id, first, firstFlags, wrap, slots, SlotAddress(first) + 14));
        foreach (var d in _walk)
            _sink.Event(PackedRingEvents.DescriptorRead(_queue, id, d.Slot, d.Addr, d.Len, d.Flags, d.Table == 0 && d.Slot < first ? !wrap : wrap, d.Table));
        _walk.Clear();
        var chain = new List<(ulong Addr, uint Len, bool Writable)>(Math.Min(buffers.Length, RecordedChain.MaxBuffers));
        foreach (ref readonly var b in buffers)
        {
            if (chain.Count == RecordedChain.MaxBuffers)
                break;
            chain.Add((b.Address, b.Length, b.Writable));
        }
        _chains[id] = chain;
        var header = RecordedChain.Copy(_memory, chain, writable: false, max: 16 + DataPreview);
        if (header.Length >= 16)
            _sink.Event(RingEvents.Request(_queue, id, BitConverter.ToUInt32(header, 0), BitConverter.ToUInt64(header, 8), header));
        if (wrapAfter != wrap)
            _sink.Event(PackedRingEvents.WrapCounter("device", _queue, "driver", wrapAfter, (first + slots) % _size, id));
    }

    /// <summary>
    /// The device wrote the used descriptor of <paramref name="id"/> over <paramref name="slot"/> with the
    /// Device Ring Wrap Counter <paramref name="wrap"/>; the next one goes to <paramref name="next"/>.
    /// </summary>
    public void Used(int slot, ushort id, uint written, ushort flags, bool wrap, int slots, int next)
    {
        if (!_sink.Active)
            return;
        if (_chains.Remove(id, out var chain) && RecordedChain.TryStatus(_memory, chain, out var statusAddr, out var status))
        {
            var data = RecordedChain.Copy(_memory, chain, writable: true, max: Math.Min(DataPreview, (int)Math.Max(0, (long)written - 1)));
            _sink.Event(RingEvents.Status("device", _queue, id, statusAddr, status, data));
        }
        _sink.Event(PackedRingEvents.UsedWrite(_queue, id, slot, written, flags, wrap, slots, next, SlotAddress(slot)));
        if (next < slot || slots == _size)
            _sink.Event(PackedRingEvents.WrapCounter("device", _queue, "device", !wrap, next, id));
    }

    /// <summary>The device read the Driver Event Suppression structure after <paramref name="count"/> used slots and decided.</summary>
    public void PublishDecision(ushort offWrap, ushort flags, int count, bool interrupt)
    {
        if (!_sink.Active)
            return;
        _sink.Event(PackedRingEvents.EventSuppression("device", _queue, "driver", offWrap, flags, write: false, _driver));
        _sink.Event(PackedRingEvents.InterruptDecision(_queue, interrupt, PackedRingEvents.Reason(offWrap, flags, _eventIdx, count, _size, interrupt, "used")));
    }

    /// <summary>The device signals the first used batch of a resumed ring whatever the driver asked.</summary>
    public void PublishForced()
    {
        if (_sink.Active)
            _sink.Event(PackedRingEvents.InterruptDecision(_queue, true, "first batch after the ring (re)started: signalled whatever the Driver Event Suppression says"));
    }

    /// <summary>The device wrote its Device Event Suppression structure (read back; shown when it changed).</summary>
    public void DeviceEventWritten() => EventWritten("device", _deviceEvent, _device, ref _lastDeviceEvent);

    private void EventWritten(string structure, byte* e, ulong address, ref uint last)
    {
        if (!_sink.Active)
            return;
        var (offWrap, flags) = ReadEvent(e);
        var value = (uint)offWrap << 16 | flags;
        if (value == last)
            return;
        last = value;
        _sink.Event(PackedRingEvents.EventSuppression(structure, _queue, structure, offWrap, flags, write: true, address));
    }
}
