using VirtioSharp.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.Devices;

/// <summary>
/// Names the ring rule a driver broke when a queue finds its ring corrupt (2.7 split, 2.8
/// packed), with the indices that show it. Nothing here depends on the device type.
/// </summary>
public static class RingErrorReport
{
    /// <summary>Names the ring rule the driver broke, with the indices that show it.</summary>
    public static void Report(BreachReporter breaches, IDeviceQueue queue)
    {
        if (queue.Format == VirtqueueFormat.Packed)
        {
            ReportPacked(breaches, queue);
            return;
        }
        var value = queue.LastRingErrorValue;
        var at = queue.LastAvailIndex; // TryPop does not move past a corrupt entry
        var slot = at & (queue.Size - 1);
        switch (queue.LastRingError)
        {
            case RingError.AvailIndexTooFarAhead:
                var ahead = (ushort)(value - at);
                if (ahead >= 0x8000)
                    // 2.7.6.1: idx only grows; a value just behind the device's position went backwards.
                    breaches.Report("2.7.6.1", queue.Index, -1, $"an available idx that never decreases (the device is at {at})",
                        $"avail idx {value}, {(ushort)(at - value)} behind");
                else
                    breaches.Report("2.7.13.3", queue.Index, -1, $"avail idx at most the queue size {queue.Size} ahead of the device's {at}",
                        $"avail idx {value}, {ahead} ahead");
                break;
            case RingError.HeadOutOfRange:
                breaches.Report("2.7.6", queue.Index, -1, $"a descriptor chain head below the queue size {queue.Size}",
                    $"head {value} in available ring slot {slot} (avail index {at})");
                break;
            case RingError.HeadInFlight:
                breaches.Report("2.7.13.2", queue.Index, value, "only heads of free descriptor chains in the available ring",
                    $"head {value}, still in flight, offered again in slot {slot} (avail index {at})");
                break;
            default:
                breaches.Report("2.7", queue.Index, -1, "a sound ring", $"{queue.LastRingError} ({value})");
                break;
        }
    }

    /// <summary>Names the packed ring rule (2.8) the driver broke, with the slot and wrap counter where it showed.</summary>
    private static void ReportPacked(BreachReporter breaches, IDeviceQueue queue)
    {
        var value = queue.LastRingErrorValue;
        var at = queue.LastAvailIndex;
        var where = $"slot {at & 0x7fff}, Driver Ring Wrap Counter {at >> 15}";
        switch (queue.LastRingError)
        {
            case RingError.PackedFlagsInconsistent:
                breaches.Report("2.8.1", queue.Index, -1, "AVAIL equal to the Driver Ring Wrap Counter and USED its inverse in an available descriptor",
                    $"flags 0x{value:x4} ({PackedRing.DescribeFlags((ushort)value)}) at {where}: the descriptor's flags went backwards");
                break;
            case RingError.PackedDescriptorNotAvailable:
                breaches.Report("2.8.17", queue.Index, -1, "every descriptor of a list made available before its first",
                    $"descriptor in slot {value} of the list at {where} is not marked available");
                break;
            case RingError.PackedChainTooLong:
                breaches.Report("2.8.17", queue.Index, -1, $"a descriptor list no longer than the queue size {queue.Size}",
                    $"VIRTQ_DESC_F_NEXT on every descriptor from {where}; no buffer id can be found");
                break;
            case RingError.PackedRingOverrun:
                breaches.Report("2.8.16", queue.Index, -1, "no descriptor made available over one the device has not yet used",
                    $"a list at {where} runs into slots still in flight");
                break;
            case RingError.PackedBufferIdInFlight:
                breaches.Report("2.8.21.1", queue.Index, value, "a free buffer id for each list made available",
                    $"buffer id {value}, still in flight, made available again at {where}");
                break;
            default:
                breaches.Report("2.8", queue.Index, -1, "a sound ring", $"{queue.LastRingError} ({value})");
                break;
        }
    }
}
