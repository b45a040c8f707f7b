using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Devices;

/// <summary>What a transport should do after a queue was drained.</summary>
public enum QueueOutcome
{
    /// <summary>Nothing to tell the driver.</summary>
    None,
    /// <summary>Used buffers the driver wants to hear about: raise the interrupt / signal call.</summary>
    Interrupt,
    /// <summary>The driver broke the ring: set DEVICE_NEEDS_RESET (2.1.2) and stop the queue.</summary>
    NeedsReset,
}

/// <summary>
/// A virtio device as transports see it: identity, features, config space and queue work.
/// It knows nothing of the transport; transports know nothing of the device type.
/// </summary>
public interface IVirtioDevice
{
    /// <summary>5: Device ID (2 = block).</summary>
    uint DeviceId { get; }
    ulong DeviceFeatures { get; }
    int NumQueues { get; }
    ushort MaxQueueSize { get; }
    int ConfigSize { get; }
    BreachReporter Breaches { get; }
    ILogSink? Log { get; }
    /// <summary>Where ring events go while someone records or narrates; transports hand it to their queues.</summary>
    ITraceSink? Trace => null;

    /// <summary>2.5.1: a number that changes whenever the configuration space does (4.2.2 ConfigGeneration).</summary>
    uint ConfigGeneration => 0;

    /// <summary>
    /// Raised, on any thread, after the device changed its configuration space by itself (a disk
    /// resized): the transport sends the driver a configuration change notification (2.5.2).
    /// </summary>
    event Action? ConfigChanged
    {
        add { }
        remove { }
    }

    /// <summary>
    /// Most operations of one queue the device keeps in flight through <see cref="IQueueIo"/>
    /// (a worker sizes its kernel ring by it, bounded by the queue size); 0 when it starts none.
    /// </summary>
    int MaxQueueIoInFlight => 0;

    /// <summary>The spec's name of a feature bit, the device type's own bits included (for logs).</summary>
    string FeatureName(int bit) => VirtioFeatures.Name(bit);

    void ReadConfig(int offset, Span<byte> destination);
    /// <summary>Config writes (5.2.4: writeback only, and we do not offer CONFIG_WCE): accepted and ignored.</summary>
    void WriteConfig(int offset, ReadOnlySpan<byte> source);

    /// <summary>The driver finished initialization with these features (DRIVER_OK).</summary>
    void Activate(ulong negotiatedFeatures);

    /// <summary>Drains one queue. Never throws for anything the driver wrote.</summary>
    QueueOutcome ProcessQueue(IDeviceQueue queue) => ProcessQueue(queue, null);

    /// <summary>
    /// Drains one queue; with <paramref name="io"/>, requests it can start there stay in flight
    /// (taken from the available ring, not yet used) until <see cref="CompleteIo"/>.
    /// </summary>
    QueueOutcome ProcessQueue(IDeviceQueue queue, IQueueIo? io);

    /// <summary>
    /// Finishes an operation started through <see cref="IQueueIo"/>: <paramref name="result"/> is what
    /// the system call returned (bytes, or a negative errno). Adds the used element; the caller
    /// publishes the used ring and notifies.
    /// </summary>
    void CompleteIo(IDeviceQueue queue, ushort tag, int result);

    /// <summary>Whether <see cref="ProcessQueue(IDeviceQueue, IQueueIo?)"/> would use an <see cref="IQueueIo"/> at all.</summary>
    bool SupportsQueueIo => false;

    /// <summary>Operations of <paramref name="queue"/> started through <see cref="IQueueIo"/> and not yet completed.</summary>
    int QueueIoInFlight(int queue) => 0;

    /// <summary>
    /// Stopwatch ticks until <paramref name="queue"/> may take more requests (a rate limit left
    /// them in the ring; ProcessQueue left notifications off), 0 when it may now. The worker
    /// sleeps at most this long, then drains again. 0 too when the queue has no chain available,
    /// as for the drain (<see cref="IChainHandler.WaitTicks"/>).
    /// </summary>
    long QueueWaitTicks(IDeviceQueue queue) => 0;

    /// <summary>The driver reset the device or went away.</summary>
    void Reset();
}
