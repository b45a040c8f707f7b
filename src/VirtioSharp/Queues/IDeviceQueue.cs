namespace VirtioSharp.Queues;

/// <summary>
/// The device's half of a virtqueue, independent of ring format (split, packed).
/// Used by one thread at a time: the queue's worker.
/// </summary>
public interface IDeviceQueue
{
    int Index { get; }
    /// <summary>Split (2.7) or packed (2.8).</summary>
    VirtqueueFormat Format => VirtqueueFormat.Split;
    ushort Size { get; }
    bool EventIdx { get; }
    RingError LastRingError { get; }
    /// <summary>Details of the last ring error (offending index or head).</summary>
    int LastRingErrorValue { get; }

    PopResult TryPop(out DescriptorChain chain);
    /// <summary>Returns a chain to the driver; <paramref name="written"/> bytes were written into its writable buffers.</summary>
    void AddUsed(ushort head, uint written);
    /// <summary>
    /// <see cref="AddUsed"/> for a caller that ends the batch with <see cref="PublishUsed"/> or
    /// <see cref="PublishUsedForPoller"/>: the driver may see the element only then. A split ring
    /// moves used idx once per batch (2.7.8.2), as the driver moves avail idx once per publish;
    /// a packed ring writes the flags of the batch's first used descriptor last (2.8.9).
    /// </summary>
    void AddUsedToBatch(ushort head, uint written) => AddUsed(head, written);
    /// <summary>Ends a batch of used elements; true if the driver wants an interrupt for them (2.7.7.2).</summary>
    bool PublishUsed();
    /// <summary>
    /// Ends a batch without deciding on an interrupt, for a caller that never interrupts (it knows
    /// the driver polls): no read of the driver's suppression state, so no full barrier before it.
    /// </summary>
    void PublishUsedForPoller() => PublishUsed();
    /// <summary>The next batch of used buffers interrupts the driver whatever its suppression state (a ring resumed after another device process).</summary>
    void SignalNextBatch();
    /// <summary>Asks the driver to stop notifying (a worker is about to drain).</summary>
    void DisableNotifications();
    /// <summary>Whether a chain is available that the device has not taken (a look without side effects, for polling).</summary>
    bool HasAvailable { get; }
    /// <summary>Asks for notifications again; true if more chains arrived meanwhile (drain again).</summary>
    bool EnableNotifications();
    /// <summary>
    /// The worker polls the ring after each drain: while set, <see cref="EnableNotifications"/>
    /// leaves notifications off and only reports whether chains arrived, so a driver that
    /// publishes meanwhile does not notify a worker that is looking anyway (2.7.10, 2.8.10: the
    /// suppression is a hint the device may keep). The worker clears it before it sleeps.
    /// </summary>
    bool Polled { get; set; }
    /// <summary>
    /// The next available index the device will read (its position in the ring). Packed rings
    /// give the slot in bits 0-14 and the Driver Ring Wrap Counter the device expects in bit 15.
    /// </summary>
    ushort LastAvailIndex { get; }
    /// <summary>Number of chains taken but not yet returned.</summary>
    int InFlight { get; }
    /// <summary>
    /// With VIRTIO_F_EVENT_IDX: whether the driver's event index names a used position the device
    /// has already written (2.7.10 used_event, 2.8.10 the Driver Event Suppression's offset), so
    /// the driver is waiting for an interrupt about buffers that are used. True for a moment after
    /// each interrupt; when it stays true, that interrupt was lost on its way to the driver.
    /// <paramref name="position"/> holds the driver's event index and the device's used position,
    /// so a caller can tell whether either moved. False without EVENT_IDX: nothing says then where the driver is.
    /// </summary>
    bool DriverAwaitsUsed(out uint position)
    {
        position = 0;
        return false;
    }

    /// <summary>
    /// Where the ring stands, both sides, in one line for a log (a stalled guest: who waits for
    /// which event). Read from another thread while the worker runs, so a snapshot, not exact.
    /// </summary>
    string DescribeRing() => $"{InFlight} in flight, next available {LastAvailIndex}";
}
