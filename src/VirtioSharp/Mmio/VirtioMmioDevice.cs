using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Memory;
using VirtioSharp.Queues;

namespace VirtioSharp.Mmio;

/// <summary>
/// The device side of virtio-mmio (4.2), version 2: the register file, the device status
/// state machine (2.1, 3.1) and the per-queue registers. Any register value the driver
/// writes is checked before use; a misbehaving driver gets DEVICE_NEEDS_RESET, never a crash.
/// Register accesses come from driver threads; <see cref="ProcessQueue"/> from the device thread.
/// </summary>
public sealed class VirtioMmioDevice : IMmioHandler
{
    private sealed class QueueRegs
    {
        public uint Num;
        public bool Ready;
        public ulong Desc, Driver, Device;
        public IDeviceQueue? Queue;
        /// <summary>Held while the queue is drained; register changes to the queue take it too.</summary>
        public readonly Lock Gate = new();
    }

    private readonly IVirtioDevice _device;
    private readonly GuestMemory _memory;
    private readonly QueueRegs[] _queues;
    private readonly Lock _lock = new();
    private uint _status;
    private uint _deviceFeaturesSel, _driverFeaturesSel, _queueSel;
    private bool _deviceFeaturesSelWritten, _driverFeaturesSelWritten;
    private ulong _driverFeatures;
    private ulong _negotiated;
    private uint _interruptStatus;

    public VirtioMmioDevice(IVirtioDevice device, GuestMemory memory)
    {
        _device = device;
        _memory = memory;
        _queues = new QueueRegs[device.NumQueues];
        for (var i = 0; i < _queues.Length; i++)
            _queues[i] = new QueueRegs();
    }

    public uint Size => MmioRegisters.RegionSize;
    public IVirtioDevice Device => _device;
    public DeviceStatus Status => (DeviceStatus)Volatile.Read(ref _status);
    public ulong NegotiatedFeatures => _negotiated;
    private ILogSink? Log => _device.Log;
    private BreachReporter Breaches => _device.Breaches;

    /// <summary>Called after a QueueNotify write (the machine wakes the device thread).</summary>
    public Action<int>? QueueNotified { get; set; }
    /// <summary>Called when InterruptStatus gains a bit (the machine raises the IRQ line).</summary>
    public Action? InterruptRaised { get; set; }
    public ITraceSink? Trace { get; set; }

    public uint Read(uint offset, int width)
    {
        var value = ReadRegister(offset, width);
        StopIfStrictFailed();
        return value;
    }

    private uint ReadRegister(uint offset, int width)
    {
        if (offset >= MmioRegisters.Config)
            return ReadConfig(offset - MmioRegisters.Config, width);
        if (width != 4 || (offset & 3) != 0)
        {
            Breaches.Report("4.2.2.2", -1, -1, "32-bit aligned register reads", $"{width}-byte read at 0x{offset:x}");
            return 0;
        }
        if (Breaches.Strict && IsWriteOnly(offset))
            Breaches.Report("4.2.2.2", -1, -1, "no reads of write-only registers", $"a read of {MmioRegisters.Name(offset)}");
        // The interrupt handler's registers never wait for a queue being drained.
        if (offset == MmioRegisters.InterruptStatus)
            return Volatile.Read(ref _interruptStatus);
        if (offset == MmioRegisters.Status)
            return Volatile.Read(ref _status);
        lock (_lock)
        {
            var q = _queueSel < _queues.Length ? _queues[_queueSel] : null;
            if (offset == MmioRegisters.DeviceFeatures && !_deviceFeaturesSelWritten && Breaches.Strict)
                Breaches.Report("4.2.2.2", -1, -1, "a DeviceFeaturesSel write before reading DeviceFeatures", "a DeviceFeatures read with no DeviceFeaturesSel write since reset");
            return offset switch
            {
                MmioRegisters.MagicValue => MmioRegisters.Magic,
                MmioRegisters.Version => MmioRegisters.CurrentVersion,
                MmioRegisters.DeviceId => _device.DeviceId,
                MmioRegisters.VendorId => MmioRegisters.VirtioSharpVendorId,
                MmioRegisters.DeviceFeatures => _deviceFeaturesSel switch
                {
                    0 => (uint)_device.DeviceFeatures,
                    1 => (uint)(_device.DeviceFeatures >> 32),
                    _ => 0, // 4.2.2.1: feature bits past 63 read as zero
                },
                MmioRegisters.QueueNumMax => q is null ? 0u : _device.MaxQueueSize,
                MmioRegisters.QueueReady => q is { Ready: true } ? 1u : 0u,
                MmioRegisters.ConfigGeneration => 0u, // config space never changes under the driver
                MmioRegisters.ShmLenLow or MmioRegisters.ShmLenHigh => 0xffffffff, // 4.2.2: no shared memory regions
                _ => 0,
            };
        }
    }

    /// <summary>4.2.2: registers the driver writes and never reads.</summary>
    private static bool IsWriteOnly(uint offset) => offset is MmioRegisters.DeviceFeaturesSel or MmioRegisters.DriverFeatures
        or MmioRegisters.DriverFeaturesSel or MmioRegisters.QueueSel or MmioRegisters.QueueNum or MmioRegisters.QueueNotify
        or MmioRegisters.InterruptAck or MmioRegisters.QueueDescLow or MmioRegisters.QueueDescHigh or MmioRegisters.QueueDriverLow
        or MmioRegisters.QueueDriverHigh or MmioRegisters.QueueDeviceLow or MmioRegisters.QueueDeviceHigh or MmioRegisters.ShmSel;

    /// <summary>
    /// strict=fail: the first breach, whatever register or queue it came through, puts the device
    /// in DEVICE_NEEDS_RESET (2.1.2) until the driver resets it.
    /// </summary>
    private void StopIfStrictFailed()
    {
        if (!Breaches.ResetRequested)
            return;
        lock (_lock)
        {
            if (Breaches.ResetRequested && ((DeviceStatus)_status & DeviceStatus.DeviceNeedsReset) == 0)
                NeedsReset("strict mode stopped at the first driver breach");
        }
    }

    private uint ReadConfig(uint offset, int width)
    {
        Span<byte> b = stackalloc byte[4];
        if (width is not (1 or 2 or 4) || offset > int.MaxValue)
            return 0;
        _device.ReadConfig((int)offset, b[..width]);
        return BitConverter.ToUInt32(b);
    }

    public void Write(uint offset, uint value, int width)
    {
        WriteRegister(offset, value, width);
        StopIfStrictFailed();
    }

    private void WriteRegister(uint offset, uint value, int width)
    {
        if (offset >= MmioRegisters.Config)
        {
            Span<byte> b = stackalloc byte[4];
            BitConverter.TryWriteBytes(b, value);
            if (width is 1 or 2 or 4 && offset - MmioRegisters.Config <= int.MaxValue)
                _device.WriteConfig((int)(offset - MmioRegisters.Config), b[..width]);
            return;
        }
        if (width != 4 || (offset & 3) != 0)
        {
            Breaches.Report("4.2.2.2", -1, -1, "32-bit aligned register writes", $"{width}-byte write at 0x{offset:x}");
            return;
        }
        if (offset == MmioRegisters.QueueNotify)
        {
            Notify(value);
            return;
        }
        if (offset == MmioRegisters.InterruptAck)
        {
            // 4.2.2.2: the driver MUST NOT set undefined bits in InterruptACK.
            if (Breaches.Strict && (value & ~(MmioRegisters.InterruptUsedBuffer | MmioRegisters.InterruptConfigChange)) != 0)
                Breaches.Report("4.2.2.2", -1, -1, "only defined bits (1, 2) in InterruptACK", $"InterruptACK 0x{value:x}");
            Interlocked.And(ref _interruptStatus, ~value);
            return;
        }
        lock (_lock)
            WriteLocked(offset, value);
    }

    private void Notify(uint value)
    {
        // 4.2.2: QueueNotify carries the queue index (no notification data without F_NOTIFICATION_DATA).
        var index = value & 0xffff;
        if (index >= _queues.Length)
        {
            Breaches.Report("4.2.3.3", (int)index, -1, $"a queue index below {_queues.Length}", $"QueueNotify {value}");
            return;
        }
        if (((DeviceStatus)Volatile.Read(ref _status) & DeviceStatus.DriverOk) == 0)
            Breaches.Report("3.1.1", (int)index, -1, "no notification before DRIVER_OK", $"QueueNotify {index} with status {Status}");
        QueueNotified?.Invoke((int)index);
    }

    private void WriteLocked(uint offset, uint value)
    {
        var q = _queueSel < _queues.Length ? _queues[_queueSel] : null;
        switch (offset)
        {
            case MmioRegisters.DeviceFeaturesSel: _deviceFeaturesSel = value; _deviceFeaturesSelWritten = true; break;
            case MmioRegisters.DriverFeaturesSel: _driverFeaturesSel = value; _driverFeaturesSelWritten = true; break;
            case MmioRegisters.DriverFeatures:
                if (!_driverFeaturesSelWritten && Breaches.Strict)
                    Breaches.Report("4.2.2.2", -1, -1, "a DriverFeaturesSel write before writing DriverFeatures", "a DriverFeatures write with no DriverFeaturesSel write since reset");
                if (((DeviceStatus)_status & DeviceStatus.FeaturesOk) != 0)
                    Breaches.Report("3.1.1", -1, -1, "driver features written before FEATURES_OK", "a write after FEATURES_OK");
                else if (_driverFeaturesSel == 0)
                    _driverFeatures = (_driverFeatures & 0xffffffff00000000UL) | value;
                else if (_driverFeaturesSel == 1)
                    _driverFeatures = (_driverFeatures & 0xffffffffUL) | ((ulong)value << 32);
                else if (value != 0)
                    Breaches.Report("2.2.1", -1, -1, "only offered feature bits", $"0x{value:x} in feature window {_driverFeaturesSel}");
                break;
            case MmioRegisters.QueueSel: _queueSel = value; break;
            case MmioRegisters.QueueNum:
            case MmioRegisters.QueueDescLow:
            case MmioRegisters.QueueDescHigh:
            case MmioRegisters.QueueDriverLow:
            case MmioRegisters.QueueDriverHigh:
            case MmioRegisters.QueueDeviceLow:
            case MmioRegisters.QueueDeviceHigh:
                WriteQueueRegister(q, offset, value);
                break;
            case MmioRegisters.QueueReady:
                if (q is null)
                    Breaches.Report("4.2.3.2", (int)_queueSel, -1, $"a queue below {_queues.Length}", "QueueReady on a missing queue");
                else if (value == 1 && !q.Ready)
                {
                    if (Breaches.Strict && ((DeviceStatus)_status & DeviceStatus.DriverOk) != 0)
                        Breaches.Report("3.1.1", (int)_queueSel, -1, "queue setup before DRIVER_OK", "QueueReady = 1 after DRIVER_OK");
                    EnableQueue((int)_queueSel, q);
                }
                else if (value == 0)
                {
                    lock (q.Gate)
                    {
                        q.Ready = false;
                        q.Queue = null;
                    }
                }
                break;
            case MmioRegisters.Status:
                WriteStatus(value);
                break;
            case MmioRegisters.QueueReset:
            case MmioRegisters.ShmSel:
                break;
            default:
                Breaches.Report("4.2.2.2", -1, -1, "writes to writable registers only", $"write of 0x{value:x} to read-only {MmioRegisters.Name(offset)}");
                break;
        }
    }

    private void WriteQueueRegister(QueueRegs? q, uint offset, uint value)
    {
        if (q is null)
        {
            Breaches.Report("4.2.3.2", (int)_queueSel, -1, $"a queue below {_queues.Length}", $"{MmioRegisters.Name(offset)} on a missing queue");
            return;
        }
        if (Breaches.Strict && ((DeviceStatus)_status & DeviceStatus.DriverOk) != 0)
            Breaches.Report("3.1.1", (int)_queueSel, -1, "queue setup before DRIVER_OK", $"{MmioRegisters.Name(offset)} written after DRIVER_OK");
        if (q.Ready)
        {
            // 4.2.2.2: queue registers are set while QueueReady is 0.
            Breaches.Report("4.2.2.2", (int)_queueSel, -1, "queue registers written while QueueReady is 0", $"{MmioRegisters.Name(offset)} written to a ready queue");
            return;
        }
        switch (offset)
        {
            case MmioRegisters.QueueNum: q.Num = value; break;
            case MmioRegisters.QueueDescLow: q.Desc = (q.Desc & 0xffffffff00000000UL) | value; break;
            case MmioRegisters.QueueDescHigh: q.Desc = (q.Desc & 0xffffffffUL) | ((ulong)value << 32); break;
            case MmioRegisters.QueueDriverLow: q.Driver = (q.Driver & 0xffffffff00000000UL) | value; break;
            case MmioRegisters.QueueDriverHigh: q.Driver = (q.Driver & 0xffffffffUL) | ((ulong)value << 32); break;
            case MmioRegisters.QueueDeviceLow: q.Device = (q.Device & 0xffffffff00000000UL) | value; break;
            case MmioRegisters.QueueDeviceHigh: q.Device = (q.Device & 0xffffffffUL) | ((ulong)value << 32); break;
        }
    }

    private void EnableQueue(int index, QueueRegs q)
    {
        if (((DeviceStatus)_status & DeviceStatus.FeaturesOk) == 0)
            Breaches.Report("3.1.1", index, -1, "queues set up after FEATURES_OK", $"QueueReady with status {(DeviceStatus)_status}");
        if (q.Num == 0 || q.Num > _device.MaxQueueSize)
        {
            Breaches.Report("4.2.2.2", index, -1, $"QueueNum in 1..{_device.MaxQueueSize} (QueueNumMax)", $"{q.Num}");
            NeedsReset($"queue {index}: QueueNum {q.Num} is not in 1..{_device.MaxQueueSize}");
            return;
        }
        // Only what was both offered and accepted is negotiated (2.2), also for a driver that
        // carried on after FEATURES_OK was refused.
        var accepted = _driverFeatures & _device.DeviceFeatures;
        var eventIdx = VirtioFeatures.Has(accepted, VirtioFeatures.RingEventIdx);
        var indirect = VirtioFeatures.Has(accepted, VirtioFeatures.RingIndirectDesc);
        // 4.2.2: QueueDesc, QueueDriver and QueueDevice are the descriptor table, available and used
        // rings of a split ring (2.7), or the descriptor ring and the driver and device event
        // suppression structures of a packed ring (2.8) when VIRTIO_F_RING_PACKED is negotiated.
        IDeviceQueue? queue;
        string? error;
        if (VirtioFeatures.Has(accepted, VirtioFeatures.RingPacked))
        {
            var packed = PackedDeviceQueue.Create(index, (int)q.Num, _memory, q.Desc, q.Driver, q.Device, eventIdx, indirect, out error);
            if (packed is not null)
            {
                packed.Trace = Trace;
                packed.Breaches = Breaches;
            }
            queue = packed;
            if (queue is null)
            {
                var misaligned = q.Desc % PackedQueueLayout.DescriptorRingAlignment != 0 || q.Driver % PackedQueueLayout.EventSuppressionAlignment != 0
                    || q.Device % PackedQueueLayout.EventSuppressionAlignment != 0;
                // 2.8.11: each part aligned (16, 4, 4); and every part must lie in guest memory.
                Breaches.Report(misaligned ? "2.8.11" : "2.8", index, -1, misaligned ? "virtqueue parts aligned to 16, 4 and 4 bytes" : "a ring laid out in guest memory", error ?? "");
                NeedsReset($"queue {index}: {error}");
                return;
            }
        }
        else
            queue = SplitDeviceQueue.Create(index, (int)q.Num, _memory, q.Desc, q.Driver, q.Device, eventIdx, indirect, out error);
        if (queue is null)
        {
            // 2.7.1: each part aligned (16, 2, 4); and every part must lie in guest memory.
            var misaligned = q.Desc % SplitQueueLayout.DescriptorTableAlignment != 0 || q.Driver % SplitQueueLayout.AvailRingAlignment != 0
                || q.Device % SplitQueueLayout.UsedRingAlignment != 0;
            Breaches.Report(misaligned ? "2.7.1" : "2.7", index, -1, misaligned ? "virtqueue parts aligned to 16, 2 and 4 bytes" : "a ring laid out in guest memory", error ?? "");
            NeedsReset($"queue {index}: {error}");
            return;
        }
        if ((Trace ?? _device.Trace) is { } trace && queue is SplitDeviceQueue split)
            split.Record(trace, q.Desc, q.Driver, q.Device, indirect); // a packed queue narrates through its Trace
        lock (q.Gate)
        {
            q.Queue = queue;
            q.Ready = true;
        }
        Log.Debug($"queue {index}: {(queue.Format == VirtqueueFormat.Packed ? "packed" : "split")}, size {q.Num}, desc 0x{q.Desc:x}, driver 0x{q.Driver:x}, device 0x{q.Device:x}");
    }

    private void WriteStatus(uint value)
    {
        if (value == 0)
        {
            Reset();
            return;
        }
        var old = (DeviceStatus)_status;
        var now = (DeviceStatus)value;
        // 2.1.1: the driver does not clear status bits (only reset does).
        if ((old & ~now & ~DeviceStatus.DeviceNeedsReset) != 0)
            Breaches.Report("2.1.1", -1, -1, "no status bit cleared except by writing 0", $"{old} -> {now}");
        if (Breaches.Strict)
        {
            // 3.1.1 steps 2-5: ACKNOWLEDGE, then DRIVER, then FEATURES_OK.
            var added = now & ~old;
            if ((added & DeviceStatus.Driver) != 0 && (now & DeviceStatus.Acknowledge) == 0)
                Breaches.Report("3.1.1", -1, -1, "ACKNOWLEDGE set before DRIVER", $"status {old} -> {now}");
            if ((added & DeviceStatus.FeaturesOk) != 0 && (now & DeviceStatus.Driver) == 0)
                Breaches.Report("3.1.1", -1, -1, "DRIVER set before FEATURES_OK", $"status {old} -> {now}");
        }

        if ((now & DeviceStatus.FeaturesOk) != 0 && (old & DeviceStatus.FeaturesOk) == 0)
        {
            if (!AcceptFeatures())
                now &= ~DeviceStatus.FeaturesOk; // 3.1.1 step 6: the driver sees FEATURES_OK did not stick
        }
        if ((now & DeviceStatus.DriverOk) != 0 && (old & DeviceStatus.DriverOk) == 0)
        {
            if ((now & DeviceStatus.FeaturesOk) == 0)
                Breaches.Report("3.1.1", -1, -1, "FEATURES_OK before DRIVER_OK", $"status {now}");
            _negotiated = _driverFeatures & _device.DeviceFeatures;
            _device.Activate(_negotiated);
            Log.Info($"driver ready: features {VirtioFeatures.Describe(_negotiated, _device.FeatureName)}");
        }
        // DEVICE_NEEDS_RESET is the device's bit: keep it, even if a queue worker sets it right now.
        uint seen, next;
        do
        {
            seen = Volatile.Read(ref _status);
            next = (uint)now | (seen & (uint)DeviceStatus.DeviceNeedsReset);
        } while (Interlocked.CompareExchange(ref _status, next, seen) != seen);
        if ((now & DeviceStatus.DriverOk) != 0 && (old & DeviceStatus.DriverOk) == 0)
        {
            // Chains made available before DRIVER_OK are served now.
            for (var i = 0; i < _queues.Length; i++)
            {
                if (_queues[i].Ready)
                    QueueNotified?.Invoke(i);
            }
        }
    }

    private bool AcceptFeatures()
    {
        var unknown = _driverFeatures & ~_device.DeviceFeatures;
        if (unknown != 0)
        {
            // 3.1.1 / 2.2.1: a driver accepts only offered features; refuse FEATURES_OK.
            Breaches.Report("2.2.1", -1, -1, "only offered feature bits", $"0x{unknown:x} ({VirtioFeatures.Describe(unknown, _device.FeatureName)})");
            return false;
        }
        if (!VirtioFeatures.Has(_driverFeatures, VirtioFeatures.Version1))
        {
            // Teaching drivers on the modern layout sometimes never set bit 32. Serve them as a
            // little-endian modern device, as QEMU's own virtio-mmio device does, and say so once.
            Log.Warn($"driver did not accept VIRTIO_F_VERSION_1 (feature bit 32); serving it as a little-endian modern device (6.1 asks drivers to accept it)");
            if (Breaches.Strict)
                Breaches.Report("6.1", -1, -1, "VIRTIO_F_VERSION_1 accepted", "bit 32 clear in the driver features");
        }
        return true;
    }

    private void NeedsReset(string why)
    {
        Log.Error($"device needs reset: {why}");
        Interlocked.Or(ref _status, (uint)DeviceStatus.DeviceNeedsReset);
        // 2.1.2: a device entering DEVICE_NEEDS_RESET sends a configuration change notification.
        RaiseInterrupt(MmioRegisters.InterruptConfigChange);
    }

    private void RaiseInterrupt(uint bits)
    {
        Interlocked.Or(ref _interruptStatus, bits);
        InterruptRaised?.Invoke();
    }

    private void Reset()
    {
        foreach (var q in _queues)
        {
            lock (q.Gate) // waits for a drain in progress to finish
            {
                q.Ready = false;
                q.Queue = null;
            }
            q.Num = 0;
            q.Desc = q.Driver = q.Device = 0;
        }
        // The driver is done with this device lifetime: say what it broke, and start afresh
        // (strict=fail's reset request included).
        if (Breaches.Total > 0)
            Log.Info(Breaches.Summary());
        Breaches.Clear();
        Volatile.Write(ref _status, 0);
        _driverFeatures = 0;
        _negotiated = 0;
        _deviceFeaturesSel = _driverFeaturesSel = _queueSel = 0;
        _deviceFeaturesSelWritten = _driverFeaturesSelWritten = false;
        Volatile.Write(ref _interruptStatus, 0);
        _device.Reset();
    }

    /// <summary>
    /// A queue's worker thread: drains queue <paramref name="index"/> if the driver is live.
    /// Queues are drained in parallel; each holds only its own gate.
    /// </summary>
    public void ProcessQueue(int index)
    {
        if ((uint)index >= (uint)_queues.Length)
            return;
        var regs = _queues[index];
        lock (regs.Gate)
        {
            var status = (DeviceStatus)Volatile.Read(ref _status);
            if ((status & DeviceStatus.DriverOk) == 0
                || (status & (DeviceStatus.DeviceNeedsReset | DeviceStatus.Failed)) != 0)
                return;
            var queue = regs.Queue;
            if (queue is null)
                return;
            switch (_device.ProcessQueue(queue))
            {
                case QueueOutcome.Interrupt:
                    if (Trace is { Active: true } t)
                        t.Event(RingEvents.InterruptRaised(index, MmioRegisters.InterruptUsedBuffer, "IRQ line raised"));
                    RaiseInterrupt(MmioRegisters.InterruptUsedBuffer);
                    break;
                case QueueOutcome.NeedsReset:
                    RaiseInterrupt(MmioRegisters.InterruptUsedBuffer);
                    NeedsReset($"queue {index}: {(Breaches.ResetRequested ? "strict mode stopped at the first driver breach" : queue.LastRingError.ToString())}");
                    break;
            }
        }
    }
}
