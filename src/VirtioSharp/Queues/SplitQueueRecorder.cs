using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;

namespace VirtioSharp.Queues;

/// <summary>
/// Reports what one half of a split virtqueue does as <see cref="RingEvent"/>s, with the guest
/// addresses of the fields it touches. A queue holds one only while someone records, so a queue
/// nobody watches pays a null check. Guest memory it shows (headers, data, status) is copied out
/// for display only; the queue's own decisions never depend on it. Used by the queue's one thread.
/// </summary>
public sealed unsafe class SplitQueueRecorder
{
    private const int DataPreview = 64;
    private readonly ITraceSink _sink;
    private readonly GuestMemory _memory;
    private readonly int _queue;
    private readonly int _size;
    private readonly ulong _desc, _avail, _used;
    private readonly Dictionary<int, List<(ulong Addr, uint Len, bool Writable)>> _chains = [];
    private List<(ulong Addr, uint Len, bool Writable)>? _walk;
    private int _walkHead = -1;
    private int _lastAvailEvent = -1, _lastUsedEvent = -1;

    public SplitQueueRecorder(ITraceSink sink, GuestMemory memory, int queue, int size, ulong desc, ulong avail, ulong used, bool eventIdx, bool indirect, bool announce = true)
    {
        _sink = sink;
        _memory = memory;
        _queue = queue;
        _size = size;
        _desc = desc;
        _avail = avail;
        _used = used;
        if (announce && sink.Active)
            sink.Event(RingEvents.QueueSetup(queue, size, desc, avail, used, eventIdx, indirect, "split"));
    }

    public bool Active => _sink.Active;
    private ulong AvailSlot(int slot) => _avail + 4 + 2 * (ulong)slot;
    private ulong UsedSlot(int slot) => _used + 4 + 8 * (ulong)slot;

    // ------------------------------------------------------------------ device half

    public void Popped(ushort availIdx, int slot, ushort head)
    {
        if (!_sink.Active)
            return;
        _walkHead = head;
        _walk = new List<(ulong, uint, bool)>(4);
        _sink.Event(RingEvents.AvailRingRead(_queue, head, slot, availIdx, AvailSlot(slot)));
    }

    public void DescriptorRead(uint index, ulong addr, uint len, ushort flags, ushort next, ulong table)
    {
        if (!_sink.Active || _walk is null)
            return;
        _sink.Event(RingEvents.DescriptorRead(_queue, _walkHead, (int)index, addr, len, flags, next, table));
        if ((flags & SplitRing.DescFIndirect) == 0 && _walk.Count < RecordedChain.MaxBuffers)
            _walk.Add((addr, len, (flags & SplitRing.DescFWrite) != 0));
    }

    public void Walked()
    {
        if (!_sink.Active || _walk is null)
            return;
        var head = _walkHead;
        _chains[head] = _walk;
        var header = RecordedChain.Copy(_memory, _walk, writable: false, max: 16 + DataPreview);
        if (header.Length >= 16)
        {
            var type = BitConverter.ToUInt32(header, 0);
            var sector = BitConverter.ToUInt64(header, 8);
            _sink.Event(RingEvents.Request(_queue, head, type, sector, header));
        }
        _walk = null;
        _walkHead = -1;
    }

    public void Used(ushort head, uint written, ushort oldIdx, ushort newIdx)
    {
        if (!_sink.Active)
            return;
        var slot = oldIdx & (_size - 1);
        if (_chains.Remove(head, out var chain))
        {
            if (RecordedChain.TryStatus(_memory, chain, out var statusAddr, out var status))
            {
                var data = RecordedChain.Copy(_memory, chain, writable: true, max: Math.Min(DataPreview, (int)Math.Max(0, (long)written - 1)));
                _sink.Event(RingEvents.Status("device", _queue, head, statusAddr, status, data));
            }
        }
        _sink.Event(RingEvents.UsedRingWrite(_queue, head, slot, written, UsedSlot(slot)));
        _sink.Event(RingEvents.UsedIndex(_queue, oldIdx, newIdx, _size, _used + 2));
    }

    public void InterruptDecision(bool eventIdx, ushort usedEvent, ushort availFlags, ushort oldIdx, ushort newIdx, bool needed)
    {
        if (!_sink.Active)
            return;
        var reason = eventIdx
            ? $"EVENT_IDX: used_event {usedEvent} {(needed ? "lies" : "does not lie")} in [{oldIdx}, {newIdx})"
            : $"NO_INTERRUPT {((availFlags & SplitRing.AvailFNoInterrupt) != 0 ? "set" : "clear")} in avail.flags";
        _sink.Event(RingEvents.InterruptDecision(_queue, !needed, reason));
    }

    public void UsedFlags(ushort oldFlags, ushort newFlags)
    {
        if (!_sink.Active || oldFlags == newFlags)
            return;
        _sink.Event(RingEvents.FlagFlip("device", _queue, "used.flags", oldFlags, newFlags, "VIRTQ_USED_F_NO_NOTIFY", _used, "2.7.10",
            "Without EVENT_IDX the device sets NO_NOTIFY in used.flags while it is busy draining, and clears it before it sleeps (a hint the driver may ignore)."));
    }

    public void AvailEvent(ushort value)
    {
        if (!_sink.Active || value == _lastAvailEvent)
            return;
        _lastAvailEvent = value;
        _sink.Event(RingEvents.EventIndex("device", _queue, "avail_event", value, _used + 4 + 8 * (ulong)_size));
    }

    // ------------------------------------------------------------------ driver half

    public void DescriptorWritten(ushort head, int position, int count, uint index, ulong addr, uint len, ushort flags, ushort next, ulong table = 0)
    {
        if (!_sink.Active)
            return;
        var role = position == 0 ? "header" : position == count - 1 ? "status" : "data";
        _sink.Event(RingEvents.DescriptorWrite(_queue, head, (int)index, addr, len, flags, next, table, (flags & SplitRing.DescFIndirect) != 0 ? "table" : role));
    }

    /// <summary>An indirect descriptor and the table it points at (read back from guest memory).</summary>
    public void IndirectWritten(ushort head, ulong table, int count)
    {
        if (!_sink.Active)
            return;
        DescriptorWritten(head, 0, 1, head, table, (uint)(count * SplitRing.DescriptorSize), SplitRing.DescFIndirect, 0);
        if (!_memory.TryTranslate(table, (ulong)count * SplitRing.DescriptorSize, out var host))
            return;
        for (var i = 0; i < count; i++)
        {
            var d = (byte*)host + i * SplitRing.DescriptorSize;
            DescriptorWritten(head, i, count, (uint)i, *(ulong*)d, *(uint*)(d + 8), *(ushort*)(d + 12), *(ushort*)(d + 14), table);
        }
    }

    public void AvailWritten(ushort head, ushort shadowIdx)
    {
        if (!_sink.Active)
            return;
        var slot = shadowIdx & (_size - 1);
        _sink.Event(RingEvents.AvailRingWrite(_queue, head, slot, AvailSlot(slot)));
    }

    /// <summary>avail idx is about to move from <paramref name="oldIdx"/> to <paramref name="newIdx"/> (recorded before the device can see it).</summary>
    public void Publishing(ushort oldIdx, ushort newIdx)
    {
        if (_sink.Active)
            _sink.Event(RingEvents.AvailIndex(_queue, oldIdx, newIdx, _size, _avail + 2));
    }

    /// <summary>The notification decision after avail idx moved (2.7.13.4).</summary>
    public void Published(ushort oldIdx, ushort newIdx, bool eventIdx, ushort availEvent, ushort usedFlags, bool notify)
    {
        if (!_sink.Active)
            return;
        var reason = eventIdx
            ? $"EVENT_IDX: avail_event {availEvent} {(notify ? "lies" : "does not lie")} in [{oldIdx}, {newIdx})"
            : $"NO_NOTIFY {((usedFlags & SplitRing.UsedFNoNotify) != 0 ? "set" : "clear")} in used.flags";
        _sink.Event(RingEvents.Notification(_queue, !notify, reason));
    }

    public void UsedTaken(ushort head, uint length, ushort lastUsed)
    {
        if (!_sink.Active)
            return;
        var slot = lastUsed & (_size - 1);
        _sink.Event(RingEvents.UsedRingRead(_queue, head, slot, length, UsedSlot(slot)));
    }

    public void UsedEvent(ushort value)
    {
        if (!_sink.Active || value == _lastUsedEvent)
            return;
        _lastUsedEvent = value;
        _sink.Event(RingEvents.EventIndex("driver", _queue, "used_event", value, _avail + 4 + 2 * (ulong)_size));
    }

    public void AvailFlags(ushort oldFlags, ushort newFlags)
    {
        if (!_sink.Active || oldFlags == newFlags)
            return;
        _sink.Event(RingEvents.FlagFlip("driver", _queue, "avail.flags", oldFlags, newFlags, "VIRTQ_AVAIL_F_NO_INTERRUPT", _avail, "2.7.7",
            "Without EVENT_IDX the driver sets NO_INTERRUPT in avail.flags while it polls the used ring, and clears it when it wants interrupts again."));
    }
}
