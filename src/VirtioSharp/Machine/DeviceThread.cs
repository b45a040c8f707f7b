using VirtioSharp.Mmio;

namespace VirtioSharp.Machine;

/// <summary>
/// One queue's I/O thread, as a hypervisor runs one per queue: a QueueNotify write for the
/// queue wakes it, and it drains that queue. Queues are served in parallel.
/// </summary>
public sealed class DeviceThread : IDisposable
{
    private readonly VirtioMmioDevice _device;
    private readonly int _queue;
    private readonly AutoResetEvent _wake = new(false);
    private readonly Thread _thread;
    private volatile bool _stopping;
    private long _wakeups;

    public DeviceThread(VirtioMmioDevice device, int queue, string name)
    {
        _device = device;
        _queue = queue;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public long Wakeups => Interlocked.Read(ref _wakeups);

    public void Kick() => _wake.Set();

    private void Run()
    {
        while (true)
        {
            _wake.WaitOne();
            if (_stopping)
                return;
            Interlocked.Increment(ref _wakeups);
            _device.ProcessQueue(_queue);
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
