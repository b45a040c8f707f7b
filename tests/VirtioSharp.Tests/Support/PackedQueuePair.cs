using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// A <see cref="PackedDriverQueue"/> and a <see cref="PackedDeviceQueue"/> over the same packed ring,
/// stepped by hand from one thread (the packed twin of <see cref="QueuePair"/>, same
/// <see cref="RingStep"/>s). After every step it checks that no slot or buffer id is lost, that
/// every list reaches the device as it was written and in ring order (2.8.12), that every used
/// descriptor names the list the device returned with its written length (2.8.6), and that
/// neither side sleeps while work it was not told about is waiting (2.8.10).
/// </summary>
public sealed class PackedQueuePair : IDisposable
{
    private sealed class Request(long seq, ushort id, DriverBuffer[] buffers, int slots)
    {
        public long Seq { get; } = seq;
        public ushort Id { get; } = id;
        public DriverBuffer[] Buffers { get; } = buffers;
        public int Slots { get; } = slots;
        public uint Written { get; set; }
    }

    public const ulong RamBase = 0x4000_0000;
    private readonly GuestRam _ram;
    private readonly ulong _data;
    private readonly ulong _tables;
    private readonly Dictionary<ushort, Request> _outstanding = [];
    private readonly Queue<Request> _added = new();      // in ring order, not yet popped
    private readonly List<Request> _atDevice = [];       // popped, not yet returned
    private int _published;                              // how many of _added the driver has notified about
    private int _slotsOut;
    private long _usedPublished;                         // used descriptors written before the last PublishUsed
    private long _used;
    private long _usedVisible;                            // used descriptors the driver can reach: all but a batch not yet ended
    private long _nextSeq;
    private bool _lastAvailWrap = true, _lastUsedWrap = true;
    private readonly (RingStep Step, int Arg)[] _history = new (RingStep, int)[32];
    private long _steps;

    public PackedQueuePair(int size, bool eventIdx, bool indirect = true)
    {
        _ram = new GuestRam(RamBase, 4 << 20);
        var layout = PackedQueueLayout.For(size);
        Driver = new PackedDriverQueue(0, size, _ram.Memory, RamBase + layout.DescriptorRingOffset, RamBase + layout.DriverEventOffset,
            RamBase + layout.DeviceEventOffset, eventIdx);
        Device = PackedDeviceQueue.Create(0, size, _ram.Memory, Driver.DescriptorTable, Driver.DriverArea, Driver.DeviceArea, eventIdx, indirect, out var error)
            ?? throw new InvalidOperationException(error);
        _tables = RamBase + 0x10_0000;
        _data = RamBase + 0x20_0000;
        EventIdx = eventIdx;
        Indirect = indirect;
        Size = size;
    }

    public PackedDriverQueue Driver { get; }
    public PackedDeviceQueue Device { get; }
    public GuestMemory Memory => _ram.Memory;
    public bool EventIdx { get; }
    public bool Indirect { get; }
    public int Size { get; }
    public bool DeviceAsleep { get; private set; }
    public bool DriverAsleep { get; private set; }
    public long Added => _nextSeq;
    public long Completed { get; private set; }
    public long Notifications { get; private set; }
    public long Interrupts { get; private set; }
    /// <summary>Times the Driver Ring Wrap Counter and the device's used wrap counter flipped.</summary>
    public long AvailWraps { get; private set; }
    public long UsedWraps { get; private set; }

    public void Step(RingStep step, int arg)
    {
        _history[_steps++ % _history.Length] = (step, arg);
        switch (step)
        {
            case RingStep.Add: Add(1 + arg % Math.Min(4, Size), arg / 4, Indirect && arg % 7 == 3); break;
            case RingStep.Publish: Publish(); break;
            case RingStep.Pop: Pop(); break;
            case RingStep.DeviceSleep: DeviceSleep(); break;
            case RingStep.Complete: Complete(arg); break;
            case RingStep.PublishUsed: PublishUsed(); break;
            case RingStep.Take: Take(); break;
            case RingStep.DriverSleep: DriverSleep(); break;
        }
        if (Driver.AvailWrapCounter != _lastAvailWrap)
        {
            _lastAvailWrap = Driver.AvailWrapCounter;
            AvailWraps++;
        }
        var usedWrap = (Device.UsedIndex & 0x8000) != 0;
        if (usedWrap != _lastUsedWrap)
        {
            _lastUsedWrap = usedWrap;
            UsedWraps++;
        }
        CheckInvariants();
    }

    public bool Add(int length, int readable, bool indirect)
    {
        var seq = _nextSeq;
        readable %= length + 1;
        var buffers = new DriverBuffer[length];
        for (var i = 0; i < length; i++)
        {
            var address = _data + (ulong)((seq * 97 + i * 13) % 4000) * 16;
            var len = (uint)((seq + i * 31) % 509 + 1);
            buffers[i] = new DriverBuffer(address, len, i >= readable);
        }
        var free = Driver.FreeDescriptors;
        bool ok;
        ushort id;
        int slots;
        if (indirect)
        {
            // The id is not known before the add; tables live per slot of a scratch area indexed by sequence.
            var table = _tables + (ulong)(seq % (2 * Size)) * 64;
            PackedDriverQueue.WriteIndirectTable(Memory.GetSpan(table, length * PackedRing.DescriptorSize), buffers);
            ok = Driver.TryAddIndirect(table, length, out id);
            slots = 1;
        }
        else
        {
            ok = Driver.TryAdd(buffers, out id);
            slots = length;
        }
        if (!ok)
        {
            if (free >= slots || Driver.FreeDescriptors != free)
                Fail($"add failed with {free} free slots for a list of {slots}");
            return false;
        }
        if (Driver.FreeDescriptors != free - slots)
            Fail($"add of {slots} slots left {Driver.FreeDescriptors} of {free} free");
        if (_outstanding.ContainsKey(id))
            Fail($"buffer id {id} handed out twice");
        var r = new Request(seq, id, buffers, slots);
        _outstanding.Add(id, r);
        _added.Enqueue(r);
        _slotsOut += slots;
        _nextSeq++;
        return true;
    }

    public void Publish()
    {
        var notify = Driver.Publish();
        _published = _added.Count;
        if (notify)
        {
            Notifications++;
            if (DeviceAsleep)
            {
                DeviceAsleep = false;
                Device.DisableNotifications();
            }
        }
    }

    public void Pop()
    {
        if (DeviceAsleep)
            return;
        var result = Device.TryPop(out var chain);
        // A list is visible once published: the first list of a batch gets its flags then (2.8.21.1).
        if (result != (_published == 0 ? PopResult.Empty : PopResult.Chain))
            Fail($"TryPop gave {result} ({Device.LastRingError} {Device.LastRingErrorValue}) with {_added.Count} lists written, {_published} of them published");
        if (result == PopResult.Empty)
            return;
        var expected = _added.Dequeue();
        _published--;
        if (chain.Head != expected.Id || Device.BufferId(chain.Head) != expected.Id || chain.Error != ChainError.None || chain.Buffers.Length != expected.Buffers.Length)
            Fail($"device popped id {chain.Head} ({chain.Error}, {chain.Buffers.Length} buffers), driver wrote id {expected.Id} with {expected.Buffers.Length}");
        uint writable = 0;
        for (var i = 0; i < chain.Buffers.Length; i++)
        {
            var b = chain.Buffers[i];
            var e = expected.Buffers[i];
            if (b.Address != e.Address || b.Length != e.Length || b.Writable != e.DeviceWritable)
                Fail($"buffer {i} of id {chain.Head} differs from what the driver wrote");
            if (b.Writable)
                writable += b.Length;
        }
        expected.Written = writable == 0 ? 0 : (uint)(expected.Seq % (writable + 1));
        _atDevice.Add(expected);
    }

    public void DeviceSleep()
    {
        if (DeviceAsleep)
            return;
        if (Device.EnableNotifications())
            Device.DisableNotifications();
        else
            DeviceAsleep = true;
    }

    public void Complete(int pick)
    {
        if (_atDevice.Count == 0)
            return;
        var i = (int)((uint)pick % (uint)_atDevice.Count);
        var r = _atDevice[i];
        _atDevice.RemoveAt(i);
        // Half the lists go back within a batch: the driver sees them only when the batch ends
        // (its first used descriptor's flags are written last, 2.8.9); the others at once,
        // together with any batch before them.
        _used++;
        if ((pick >> 4 & 1) == 0)
            Device.AddUsedToBatch(r.Id, r.Written);
        else
        {
            Device.AddUsed(r.Id, r.Written);
            _usedVisible = _used;
        }
    }

    public void PublishUsed()
    {
        var interrupt = Device.PublishUsed();
        _usedPublished = _usedVisible = _used;
        if (interrupt)
        {
            Interrupts++;
            if (DriverAsleep)
            {
                DriverAsleep = false;
                DisableDriverInterrupts();
            }
        }
    }

    public void Take()
    {
        if (DriverAsleep)
            return;
        var pending = _usedVisible > Completed;
        var ok = Driver.TryTakeUsed(out var id, out var length, out var error);
        if (error != UsedError.None || ok != pending)
            Fail($"TryTakeUsed gave {ok} ({error}, id {id}) with a used descriptor {(pending ? "" : "not ")}pending");
        if (!ok)
            return;
        if (!_outstanding.Remove(id, out var r))
            Fail($"used id {id} was not outstanding");
        if (r!.Written != length)
            Fail($"used len {length} for id {id}, device wrote {r.Written}");
        _slotsOut -= r.Slots;
        Completed++;
        if (EventIdx && _interruptsOn && Driver.DriverEvent.OffWrap != PackedRing.OffWrap(Driver.NextUsed, Driver.UsedWrapCounter))
            Fail("2.8.10: the driver's event offset does not name its next used slot");
        if (!_interruptsOn && Driver.DriverEvent != (_eventWhenDisabled, PackedRing.EventFlagsDisable))
            Fail("2.8.10: the Driver Event Suppression structure changed while interrupts were disabled"); // no store per descriptor then
    }

    private bool _interruptsOn = true;     // the driver starts with interrupts enabled
    private ushort _eventWhenDisabled;

    private void DisableDriverInterrupts()
    {
        Driver.DisableInterrupts();
        _interruptsOn = false;
        _eventWhenDisabled = Driver.DriverEvent.OffWrap;
        if (Driver.DriverEvent.Flags != PackedRing.EventFlagsDisable)
            Fail("2.8.10: DisableInterrupts did not write RING_EVENT_FLAGS_DISABLE");
    }

    private bool EnableDriverInterrupts()
    {
        _interruptsOn = true;
        var more = Driver.EnableInterrupts();
        var expected = EventIdx ? (PackedRing.OffWrap(Driver.NextUsed, Driver.UsedWrapCounter), PackedRing.EventFlagsDesc) : (Driver.DriverEvent.OffWrap, PackedRing.EventFlagsEnable);
        if (Driver.DriverEvent != expected)
            Fail($"2.8.10: EnableInterrupts left the Driver Event Suppression structure at {Driver.DriverEvent}");
        return more;
    }

    public void DriverSleep()
    {
        if (DriverAsleep)
            return;
        if (EnableDriverInterrupts())
            DisableDriverInterrupts();
        else
            DriverAsleep = true;
    }

    private string History()
    {
        var lines = new List<string>();
        for (var i = Math.Max(0, _steps - _history.Length); i < _steps; i++)
            lines.Add($"{_history[i % _history.Length].Step}({_history[i % _history.Length].Arg})");
        return $"after steps: {string.Join(", ", lines)}; driver avail slot {Driver.NextAvail} wrap {Driver.AvailWrapCounter}, used slot {Driver.NextUsed} wrap {Driver.UsedWrapCounter}; device at 0x{Device.LastAvailIndex:x4}, used 0x{Device.UsedIndex:x4}";
    }

    private void Fail(string what) => Assert.Fail($"{what}; {History()}");

    private void CheckInvariants()
    {
        if (Driver.FreeDescriptors + _slotsOut != Size)
            Fail($"{Driver.FreeDescriptors} free + {_slotsOut} out != {Size} slots");
        if (_outstanding.Count != _added.Count + _atDevice.Count + (_used - Completed))
            Fail($"{_outstanding.Count} outstanding, but {_added.Count} written + {_atDevice.Count} at the device + {_used - Completed} used");
        if (Device.InFlight != _atDevice.Count)
            Fail($"device has {Device.InFlight} in flight, model {_atDevice.Count}");
        // A sleeping device was notified of every list the driver published (2.8.21.2).
        if (DeviceAsleep && _published > 0)
            Fail("a sleeping device was not notified of published lists");
        // A sleeping driver has taken every used descriptor the device published (2.8.10).
        if (DriverAsleep && Completed < _usedPublished)
            Fail("a sleeping driver was not interrupted for published used descriptors");
    }

    /// <summary>Runs both sides to completion: everything comes back and every slot and id is free.</summary>
    public void Drain()
    {
        Publish();
        if (DeviceAsleep)
        {
            DeviceAsleep = false;
            Device.DisableNotifications();
        }
        while (_added.Count > 0)
            Step(RingStep.Pop, 0);
        while (_atDevice.Count > 0)
            Step(RingStep.Complete, 0);
        Step(RingStep.PublishUsed, 0);
        if (DriverAsleep)
        {
            DriverAsleep = false;
            DisableDriverInterrupts();
        }
        while (Completed < _used)
            Step(RingStep.Take, 0);
        Assert.Empty(_outstanding);
        Assert.Equal(Size, Driver.FreeDescriptors);
        Assert.Equal(0, Device.InFlight);
        Assert.Equal(0, Device.SlotsInFlight);
        Assert.Equal(Added, Completed);
        // Both sides stand at the same slot with the same counter once all is used (2.8.1).
        Assert.Equal(PackedRing.OffWrap(Driver.NextAvail, Driver.AvailWrapCounter), Device.LastAvailIndex);
        Assert.Equal(Device.LastAvailIndex, Device.UsedIndex);
        Assert.Equal(PackedRing.OffWrap(Driver.NextUsed, Driver.UsedWrapCounter), Device.UsedIndex);
    }

    public void Dispose() => _ram.Dispose();
}
