using VirtioSharp.Queues;

namespace VirtioSharp.Devices;

/// <summary>
/// A device type's work on one descriptor chain, as <see cref="QueueDrainer"/> hands it over:
/// the device parses, validates and runs (or starts) the request; the drain loop around it is
/// the same for every device type.
/// </summary>
public interface IChainHandler
{
    /// <summary>
    /// Serves one chain taken from <paramref name="queue"/> and returns the bytes written into its
    /// device-writable buffers (the used length), or <see cref="QueueDrainer.Deferred"/> when the
    /// request was started on <paramref name="io"/> and stays in flight. Never throws for anything
    /// the driver wrote.
    /// </summary>
    uint HandleChain(IDeviceQueue queue, in DescriptorChain chain, IQueueIo? io);

    /// <summary>
    /// Stopwatch ticks until <paramref name="queue"/> may take its next chain (a rate limit), 0 when
    /// it may now or has no chain available: a queue with nothing to take neither waits for the
    /// limits nor is counted as waiting.
    /// </summary>
    long WaitTicks(IDeviceQueue queue) => 0;
}
