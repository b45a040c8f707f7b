using System.Diagnostics;
using VirtioSharp.Queues;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>
/// Sends the call again when an interrupt was lost. A queue worker about to sleep asks
/// <see cref="BeforeSleep"/>: if the driver's event index names used buffers the device has already
/// written (<see cref="IDeviceQueue.DriverAwaitsUsed"/>), the driver is waiting for an interrupt
/// about them. That is normal for the moment the interrupt takes to arrive; if neither side has
/// moved after <see cref="FirstDelayMs"/>, <see cref="Due"/> says to signal the call again, then
/// after twice as long, up to <see cref="MaxDelayMs"/>. A spurious interrupt is harmless (the
/// driver must handle them, 2.7.7.2 and 2.8.10); a lost one leaves the guest waiting for ever.
/// Owned by the queue's worker thread; <see cref="Resent"/> may be read from any thread.
/// </summary>
public sealed class CallWatchdog
{
    public const int FirstDelayMs = 10;
    public const int MaxDelayMs = 1000;
    private static readonly long TicksPerMs = Stopwatch.Frequency / 1000;

    private bool _watching;
    private uint _position;
    private long _deadline;
    private int _delayMs;
    private long _resent;

    /// <summary>Calls sent again because the driver kept waiting for used buffers.</summary>
    public long Resent => Interlocked.Read(ref _resent);

    /// <summary>Forgets what it watched (a ring starts: the positions are new).</summary>
    public void Reset() => _watching = false;

    /// <summary>
    /// Before the worker sleeps: milliseconds until it should look again (-1: the driver waits for
    /// nothing the device has used, sleep as long as needed).
    /// </summary>
    public int BeforeSleep(IDeviceQueue queue)
    {
        if (!queue.DriverAwaitsUsed(out var position))
        {
            _watching = false;
            return -1;
        }
        var now = Stopwatch.GetTimestamp();
        if (!_watching || position != _position)
        {
            _watching = true;
            _position = position;
            _delayMs = FirstDelayMs;
            _deadline = now + _delayMs * TicksPerMs;
        }
        return (int)Math.Max(0, (_deadline - now + TicksPerMs - 1) / TicksPerMs);
    }

    /// <summary>After the worker wakes: true when the call must be signalled again (counted in <see cref="Resent"/>).</summary>
    public bool Due(IDeviceQueue queue)
    {
        if (!_watching)
            return false;
        var now = Stopwatch.GetTimestamp();
        if (now < _deadline)
            return false;
        if (!queue.DriverAwaitsUsed(out var position) || position != _position)
        {
            _watching = false; // the driver caught up, or more was used (and signalled) since
            return false;
        }
        _delayMs = Math.Min(_delayMs * 2, MaxDelayMs);
        _deadline = now + _delayMs * TicksPerMs;
        Interlocked.Increment(ref _resent);
        return true;
    }
}
