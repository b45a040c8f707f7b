namespace VirtioSharp.Queues;

/// <summary>One buffer a driver offers: guest-physical address, length, and who writes it.</summary>
public readonly record struct DriverBuffer(ulong Address, uint Length, bool DeviceWritable);

/// <summary>What the driver found when reading a used element it cannot trust.</summary>
public enum UsedError
{
    None,
    /// <summary>2.7.8: used idx ran more than the queue size ahead.</summary>
    UsedIndexTooFarAhead,
    /// <summary>2.7.8: the used id names no chain the driver has outstanding.</summary>
    UnknownId,
}

/// <summary>
/// The driver's half of a virtqueue, independent of ring format. Callers serialise access
/// (the block driver holds one lock per queue).
/// </summary>
public interface IDriverQueue
{
    int Index { get; }
    ushort Size { get; }
    /// <summary>Split (2.7) or packed (2.8).</summary>
    VirtqueueFormat Format => VirtqueueFormat.Split;
    int FreeDescriptors { get; }
    /// <summary>
    /// Places a chain (device-readable buffers first); false when descriptors run out. The device
    /// may see it only after the next <see cref="Publish"/> or <see cref="PublishForPoller"/>
    /// (split: avail idx moves then, 2.7.13.3; packed: the batch's first flags are written then).
    /// </summary>
    bool TryAdd(ReadOnlySpan<DriverBuffer> buffers, out ushort head);
    /// <summary>Places an indirect table of <paramref name="count"/> descriptors as one chain (2.7.5.3, 2.8.7); published as <see cref="TryAdd"/>.</summary>
    bool TryAddIndirect(ulong table, int count, out ushort head);
    /// <summary>Writes an indirect table in this format's descriptor layout (2.7.5.3.1, 2.8.7).</summary>
    void WriteIndirectTable(Span<byte> table, ReadOnlySpan<DriverBuffer> buffers);
    /// <summary>Makes the chains placed since the last publish available; true if the device wants a notification (2.7.13.4, 2.8.21.2).</summary>
    bool Publish();
    /// <summary>
    /// Publishes without deciding on a notification, for a caller that never notifies (it knows
    /// the device polls): no read of the device's suppression state, so no full barrier before it.
    /// </summary>
    void PublishForPoller() => Publish();
    /// <summary>Takes the next used element, if any. A bogus element yields false with an error.</summary>
    bool TryTakeUsed(out ushort head, out uint length, out UsedError error);
    /// <summary>Asks the device to stop interrupting for this queue.</summary>
    void DisableInterrupts();
    /// <summary>Asks for interrupts again; true if used buffers arrived meanwhile.</summary>
    bool EnableInterrupts();
    /// <summary>
    /// The driver watches the used ring itself (polling): interrupts stay off, and taking a used
    /// buffer no longer asks for the next one (2.7.7, 2.8.10), until <see cref="StopPolling"/>.
    /// </summary>
    void StartPolling();
    /// <summary>Ends polling: interrupts on again; true if used buffers arrived meanwhile (take them before sleeping).</summary>
    bool StopPolling();
    /// <summary>Between <see cref="StartPolling"/> and <see cref="StopPolling"/>.</summary>
    bool Polling { get; }
    /// <summary>Starts the ring afresh at its addresses (a new device behind the transport); nothing stays outstanding.</summary>
    void Restart() => throw new NotSupportedException($"{GetType().Name} cannot restart its ring");
}
