using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Devices;

/// <summary>
/// The drain loop every device type shares: takes chains from a queue's available ring, hands
/// each to the device's <see cref="IChainHandler"/>, puts what it finished in the used ring, and
/// says what the transport must do next. A corrupt ring is reported by its rule
/// (<see cref="RingErrorReport"/>) and answered with NEEDS_RESET, as is the first breach under
/// strict=fail. Batches: notifications stay off while it drains, and the used ring is published
/// once at the end (2.7.10, 2.8.10).
/// </summary>
public sealed class QueueDrainer(int numQueues, BreachReporter breaches, IChainHandler handler)
{
    /// <summary>A handler's answer for a request that is still in flight: no used element yet.</summary>
    public const uint Deferred = uint.MaxValue;

    /// <summary>Drains <paramref name="queue"/>. Never throws for anything the driver wrote.</summary>
    public QueueOutcome Drain(IDeviceQueue queue, IQueueIo? io)
    {
        if ((uint)queue.Index >= (uint)numQueues)
            return QueueOutcome.NeedsReset;
        // strict=fail: a breach seen elsewhere (another queue, the transport) already stopped
        // the device; take nothing more until the driver resets it.
        if (breaches.ResetRequested)
            return QueueOutcome.NeedsReset;
        queue.DisableNotifications();
        while (true)
        {
            PopResult result = PopResult.Empty;
            var throttled = false;
            // A limited device takes the next chain only while its limits allow; a delayed one
            // stays in the ring, notifications stay off, and the worker waits QueueWaitTicks. An
            // empty queue of a disk in debt is not throttled (the handler looks for a chain first),
            // so its notifications go back on and its worker sleeps until a kick.
            while (!(throttled = handler.WaitTicks(queue) > 0)
                && (result = queue.TryPop(out var chain)) == PopResult.Chain)
            {
                var written = handler.HandleChain(queue, chain, io);
                if (written != Deferred)
                    queue.AddUsedToBatch(chain.Head, written); // published with the batch, below
                if (breaches.ResetRequested)
                    break; // strict=fail: stop at the first breach
            }

            if (result == PopResult.RingCorrupt)
            {
                RingErrorReport.Report(breaches, queue);
                queue.PublishUsed();
                return QueueOutcome.NeedsReset;
            }
            if (breaches.ResetRequested)
            {
                queue.PublishUsed();
                return QueueOutcome.NeedsReset;
            }
            if (throttled)
                break;
            if (!queue.EnableNotifications())
                break;
            queue.DisableNotifications();
        }
        return queue.PublishUsed() ? QueueOutcome.Interrupt : QueueOutcome.None;
    }
}
