using VirtioSharp.Queues;

namespace VirtioSharp.Tests.Support;

/// <summary>One step a driver or a device can take on a shared split ring.</summary>
public enum RingStep
{
    /// <summary>Driver: place a chain (2.7.13.1) and put its head in the available ring (2.7.13.2).</summary>
    Add,
    /// <summary>Driver: publish avail idx (2.7.13.3) and notify if the device asks for it (2.7.13.4).</summary>
    Publish,
    /// <summary>Device (awake): take one chain from the available ring.</summary>
    Pop,
    /// <summary>Device (awake): ask for notifications again; sleeps unless work arrived (2.7.10).</summary>
    DeviceSleep,
    /// <summary>Device: return one chain it holds, in any order (2.7.8).</summary>
    Complete,
    /// <summary>Device: end a batch of used elements and interrupt if the driver asks for it (2.7.7).</summary>
    PublishUsed,
    /// <summary>Driver (awake): take one used element (2.7.14).</summary>
    Take,
    /// <summary>Driver (awake): ask for interrupts again; sleeps unless used buffers arrived (2.7.14).</summary>
    DriverSleep,
}

/// <summary>
/// A <see cref="SplitDriverQueue"/> and a <see cref="SplitDeviceQueue"/> over the same ring
/// memory, stepped by hand from one thread, with a model of what each side must observe.
/// After every step it checks that no descriptor is lost, that every chain arrives at the
/// device as it was added and in order, that every used element names the chain the device
/// returned, and that neither side sleeps while work it was not told about is waiting
/// (a lost notification or interrupt).
/// </summary>
public sealed class QueuePair : IDisposable
{
    private sealed class Request(long seq, ushort head, DriverBuffer[] buffers)
    {
        public long Seq { get; } = seq;
        public ushort Head { get; } = head;
        public DriverBuffer[] Buffers { get; } = buffers;
        public uint Written { get; set; }
    }

    private readonly RingBuilder _ring;
    private readonly ulong _data;
    private readonly Dictionary<ushort, Request> _outstanding = [];   // driver's view: head -> request
    private readonly Queue<Request> _added = new();                     // in available-ring order, not yet popped
    private readonly List<Request> _atDevice = [];                      // popped, not yet returned
    private int _published;                                             // how many of _added the device may see
    private int _descriptorsOut;
    private ushort _taken;
    private ushort _usedPublished;
    private long _nextSeq;
    private readonly (RingStep Step, int Arg)[] _history = new (RingStep, int)[32];
    private long _steps;

    public QueuePair(int size, bool eventIdx)
    {
        _ring = new RingBuilder(size, 1 << 20);
        Driver = _ring.Driver(eventIdx);
        Device = _ring.Device(eventIdx: eventIdx);
        _data = _ring.Alloc(64 * 1024, 4096);
        EventIdx = eventIdx;
    }

    public SplitDriverQueue Driver { get; }
    public SplitDeviceQueue Device { get; }
    /// <summary>The ring memory both halves share, for reading what the other half would see.</summary>
    public RingBuilder Ring => _ring;
    public bool EventIdx { get; }
    public int Size => _ring.Size;
    public bool DeviceAsleep { get; private set; }
    public bool DriverAsleep { get; private set; }
    public long Added => _nextSeq;
    public long Completed { get; private set; }
    public long Notifications { get; private set; }
    public long Interrupts { get; private set; }
    public int Outstanding => _outstanding.Count;

    /// <summary>Runs one step; <paramref name="arg"/> picks chain shape or which held chain to return.</summary>
    public void Step(RingStep step, int arg)
    {
        _history[_steps++ % _history.Length] = (step, arg);
        switch (step)
        {
            case RingStep.Add: Add(1 + arg % Math.Min(4, Size), arg / 4); break;
            case RingStep.Publish: Publish(); break;
            case RingStep.Pop: Pop(); break;
            case RingStep.DeviceSleep: DeviceSleep(); break;
            case RingStep.Complete: Complete(arg); break;
            case RingStep.PublishUsed: PublishUsed(); break;
            case RingStep.Take: Take(); break;
            case RingStep.DriverSleep: DriverSleep(); break;
        }
        CheckInvariants();
    }

    public bool Add(int length, int readable)
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
        var ok = Driver.TryAdd(buffers, out var head);
        if (!ok)
        {
            if (free >= length || Driver.FreeDescriptors != free)
                Fail($"TryAdd failed with {free} free descriptors for a chain of {length}");
            return false;
        }
        if (Driver.FreeDescriptors != free - length)
            Fail($"TryAdd of {length} left {Driver.FreeDescriptors} of {free} free");
        if (_outstanding.ContainsKey(head))
            Fail($"head {head} handed out twice");
        var r = new Request(seq, head, buffers);
        _outstanding.Add(head, r);
        _added.Enqueue(r);
        _descriptorsOut += length;
        _nextSeq++;
        return true;
    }

    public void Publish()
    {
        var before = _ring.AvailIdx;
        var notify = Driver.Publish();
        // 2.7.13.3: idx moves by the number of heads added since the last publish.
        if (_ring.AvailIdx != (ushort)(before + (_added.Count - _published)))
            Fail($"avail idx moved from {before} to {_ring.AvailIdx} for {_added.Count - _published} new heads");
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
        if (result != (_published == 0 ? PopResult.Empty : PopResult.Chain))
            Fail($"TryPop gave {result} ({Device.LastRingError}) with {_published} chains published");
        if (result == PopResult.Empty)
            return;
        var expected = _added.Dequeue();
        _published--;
        // The device sees exactly the chain the driver added, in available-ring order.
        if (chain.Head != expected.Head || chain.Error != ChainError.None || chain.Buffers.Length != expected.Buffers.Length)
            Fail($"device popped head {chain.Head} ({chain.Error}, {chain.Buffers.Length} buffers), driver added head {expected.Head} with {expected.Buffers.Length}");
        uint writable = 0;
        for (var i = 0; i < chain.Buffers.Length; i++)
        {
            var b = chain.Buffers[i];
            var e = expected.Buffers[i];
            if (b.Address != e.Address || b.Length != e.Length || b.Writable != e.DeviceWritable)
                Fail($"buffer {i} of head {chain.Head} differs from what the driver added");
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
            Device.DisableNotifications(); // work arrived meanwhile: stay awake and drain it
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
        Device.AddUsed(r.Head, r.Written);
    }

    public void PublishUsed()
    {
        var interrupt = Device.PublishUsed();
        _usedPublished = _ring.UsedIdx;
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
        var pending = _ring.UsedIdx != _taken;
        var ok = Driver.TryTakeUsed(out var head, out var length, out var error);
        if (error != UsedError.None || ok != pending)
            Fail($"TryTakeUsed gave {ok} ({error}) with an element {(pending ? "" : "not ")}pending");
        if (!ok)
            return;
        if (!_outstanding.Remove(head, out var r))
            Fail($"used id {head} was not outstanding");
        if (r!.Written != length)
            Fail($"used len {length} for head {head}, device wrote {r.Written}");
        _descriptorsOut -= r.Buffers.Length;
        _taken++;
        Completed++;
        if (EventIdx && _interruptsOn && _ring.UsedEvent != _taken)
            Fail($"used_event {_ring.UsedEvent} after taking {_taken}"); // 2.7.7.1: interrupt me at the next used element
        if (EventIdx && !_interruptsOn && _ring.UsedEvent != _eventWhenDisabled)
            Fail($"used_event moved from {_eventWhenDisabled} to {_ring.UsedEvent} while interrupts were off"); // no store per element then
    }

    private bool _interruptsOn = true;     // the driver starts with interrupts enabled
    private ushort _eventWhenDisabled;

    private void DisableDriverInterrupts()
    {
        Driver.DisableInterrupts();
        _interruptsOn = false;
        _eventWhenDisabled = _ring.UsedEvent;
    }

    private bool EnableDriverInterrupts()
    {
        _interruptsOn = true;
        var more = Driver.EnableInterrupts();
        if (EventIdx && _ring.UsedEvent != _taken)
            Fail($"used_event {_ring.UsedEvent} after enabling interrupts with {_taken} taken"); // 2.7.7.1
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

    /// <summary>The last steps taken, oldest first, for failure messages.</summary>
    private string History()
    {
        var lines = new List<string>();
        for (var i = Math.Max(0, _steps - _history.Length); i < _steps; i++)
            lines.Add($"{_history[i % _history.Length].Step}({_history[i % _history.Length].Arg})");
        return $"after steps: {string.Join(", ", lines)}; avail idx {_ring.AvailIdx}, device at {Device.LastAvailIndex}, used idx {_ring.UsedIdx}, taken {_taken}, last published used idx {_usedPublished}";
    }

    private void Fail(string what) => Assert.Fail($"{what}; {History()}");

    private void CheckInvariants()
    {
        // No descriptor is lost or counted twice.
        if (Driver.FreeDescriptors + _descriptorsOut != Size)
            Fail($"{Driver.FreeDescriptors} free + {_descriptorsOut} out != {Size} descriptors");
        if (_outstanding.Count != _added.Count + _atDevice.Count + (ushort)(_ring.UsedIdx - _taken))
            Fail($"{_outstanding.Count} outstanding requests, but {_added.Count} queued + {_atDevice.Count} at the device + {(ushort)(_ring.UsedIdx - _taken)} used");
        // A sleeping device has been told about every published chain (2.7.10, 2.7.13.4).
        if (DeviceAsleep)
        {
            if (_ring.AvailIdx != Device.LastAvailIndex)
                Fail("a sleeping device was not notified of published chains");
        }
        // A sleeping driver has taken every used element published so far (2.7.7): it may
        // have taken more, seen while it was awake before the device ended its batch.
        if (DriverAsleep)
        {
            if ((ushort)(_taken - _usedPublished) > (ushort)(_ring.UsedIdx - _usedPublished))
                Fail("a sleeping driver was not interrupted for published used elements");
        }
    }

    /// <summary>Runs both sides to completion: everything added comes back and every descriptor is free.</summary>
    public void Drain()
    {
        Publish();
        if (DeviceAsleep)
        {
            // Nothing was published that the device was not told about (checked above), so wake it by hand only to drain.
            DeviceAsleep = false;
            Device.DisableNotifications();
        }
        while (_published > 0)
            Step(RingStep.Pop, 0);
        while (_atDevice.Count > 0)
            Step(RingStep.Complete, 0);
        Step(RingStep.PublishUsed, 0);
        if (DriverAsleep)
        {
            DriverAsleep = false;
            DisableDriverInterrupts();
        }
        while (_ring.UsedIdx != _taken)
            Step(RingStep.Take, 0);
        Assert.Empty(_outstanding);
        Assert.Equal(Size, Driver.FreeDescriptors);
        Assert.Equal(0, Device.InFlight);
        Assert.Equal(Added, Completed);
    }

    public void Dispose() => _ring.Dispose();
}
