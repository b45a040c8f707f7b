namespace VirtioSharp.Machine;

/// <summary>
/// An interrupt line with its own thread, as a CPU taking an IRQ: the device raises it, and the
/// registered handler (the driver's interrupt service routine) runs on the line's thread.
/// Raises while the handler runs are not lost: the handler runs again.
/// </summary>
public sealed class InterruptLine : IDisposable
{
    private readonly AutoResetEvent _raised = new(false);
    private readonly Thread _thread;
    private volatile Action? _handler;
    private volatile bool _stopping;
    private long _count;

    public InterruptLine(string name)
    {
        Name = name;
        _thread = new Thread(Run) { IsBackground = true, Name = name };
        _thread.Start();
    }

    public string Name { get; }
    /// <summary>How many times the handler ran.</summary>
    public long Delivered => Interlocked.Read(ref _count);

    public void SetHandler(Action handler) => _handler = handler;

    public void Raise() => _raised.Set();

    private void Run()
    {
        while (true)
        {
            _raised.WaitOne();
            if (_stopping)
                return;
            Interlocked.Increment(ref _count);
            _handler?.Invoke();
        }
    }

    public void Dispose()
    {
        _stopping = true;
        _raised.Set();
        _thread.Join();
        _raised.Dispose();
    }
}
