using VirtioSharp.Mmio;

namespace VirtioSharp.Machine;

/// <summary>
/// The device's I/O thread, as a hypervisor runs one: a QueueNotify write marks the queue and
/// wakes the thread, which drains every marked queue.
/// </summary>
public sealed class DeviceThread : IDisposable
{
    private readonly VirtioMmioDevice _device;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private long _pending;
    private volatile bool _stopping;
    private long _wakeups;

    public DeviceThread(VirtioMmioDevice device, string name)
    {
        _device = device;
        device.QueueNotified = Kick;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public long Wakeups => Interlocked.Read(ref _wakeups);

    public void Kick(int queue)
    {
        Interlocked.Or(ref _pending, 1L << (queue & 63));
        _wake.Set();
    }

    private void Run()
    {
        while (true)
        {
            _wake.WaitOne();
            if (_stopping)
                return;
            Interlocked.Increment(ref _wakeups);
            var pending = Interlocked.Exchange(ref _pending, 0);
            while (pending != 0)
            {
                var q = System.Numerics.BitOperations.TrailingZeroCount(pending);
                pending &= pending - 1;
                _device.ProcessQueue(q);
            }
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _wake.Set();
        _thread.Join();
        _wake.Dispose();
    }
}
