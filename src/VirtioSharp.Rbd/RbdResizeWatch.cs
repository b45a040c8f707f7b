using System.Runtime.InteropServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd.Native;

namespace VirtioSharp.Rbd;

/// <summary>
/// Notices when the image is resized: librbd calls back when the image header changes
/// (rbd_update_watch), and a slow poll covers a watch lost while the cluster was away. The
/// size is read on this watch's own thread, never inside librbd's callback. A resize is
/// reported to the log; the device keeps the capacity it started with (see <see cref="Resized"/>).
/// </summary>
internal sealed unsafe class RbdResizeWatch : IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(10);

    private readonly RbdImage _image;
    private readonly ILogSink? _log;
    private readonly AutoResetEvent _changed = new(false);
    private readonly ManualResetEventSlim _stop = new(false);
    private readonly GCHandle _self;
    private readonly Thread _thread;
    private readonly ulong _watch;
    private readonly bool _watching;
    private ulong _lastSize;

    private RbdResizeWatch(RbdImage image, ulong size, ILogSink? log)
    {
        _image = image;
        _log = log;
        _lastSize = size;
        _self = GCHandle.Alloc(this);
        _watching = RbdInterop.RbdUpdateWatch(image.Handle, out _watch, &OnUpdate, GCHandle.ToIntPtr(_self)) == 0;
        _thread = new Thread(Run) { IsBackground = true, Name = "rbd resize watch" };
        _thread.Start();
    }

    /// <summary>Raised on the watch thread with (old size, new size) in bytes.</summary>
    public event Action<ulong, ulong>? Resized;

    public static RbdResizeWatch? TryStart(RbdImage image, ulong size, ILogSink? log) => new(image, size, log);

    [UnmanagedCallersOnly]
    private static void OnUpdate(nint arg)
    {
        if (GCHandle.FromIntPtr(arg).Target is RbdResizeWatch watch)
            watch._changed.Set();
    }

    private void Run()
    {
        var handles = new WaitHandle[] { _changed, _stop.WaitHandle };
        while (WaitHandle.WaitAny(handles, PollInterval) != 1)
        {
            var size = _image.CurrentSize();
            if (size < 0 || (ulong)size == _lastSize)
                continue;
            var old = _lastSize;
            _lastSize = (ulong)size;
            _log.Warn($"rbd {_image.Spec} was resized from {old} to {size} bytes; the guest keeps seeing the size it started with "
                + "until the back-end is restarted (vhost-user has no config-change message without the back-end request channel)");
            Resized?.Invoke(old, (ulong)size);
        }
    }

    public void Dispose()
    {
        if (_watching)
            RbdInterop.RbdUpdateUnwatch(_image.Handle, _watch); // no callback after it returns
        _stop.Set();
        _thread.Join();
        _self.Free();
        _changed.Dispose();
        _stop.Dispose();
    }
}
