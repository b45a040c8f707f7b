using System.Runtime.InteropServices;
using VirtioSharp.Diagnostics;
using VirtioSharp.Rbd.Native;

namespace VirtioSharp.Rbd;

/// <summary>
/// Notices when the image is resized: librbd calls back when the image header changes
/// (rbd_update_watch), and a slow poll covers a watch lost while the cluster was away. The
/// size is re-read (<c>refresh</c>) on this watch's own thread, never inside librbd's callback,
/// which must not call back into librbd.
/// </summary>
internal sealed unsafe class RbdResizeWatch : IDisposable
{
    private static readonly TimeSpan PollInterval = TimeSpan.FromSeconds(10);

    private readonly RbdImage _image;
    private readonly Action _refresh;
    private readonly AutoResetEvent _changed = new(false);
    private readonly ManualResetEventSlim _stop = new(false);
    private readonly GCHandle _self;
    private readonly Thread _thread;
    private readonly ulong _watch;
    private readonly bool _watching;

    private RbdResizeWatch(RbdImage image, Action refresh, ILogSink? log)
    {
        _image = image;
        _refresh = refresh;
        _self = GCHandle.Alloc(this);
        var result = RbdInterop.RbdUpdateWatch(image.Handle, out _watch, &OnUpdate, GCHandle.ToIntPtr(_self));
        _watching = result == 0;
        if (!_watching)
            log.Warn($"rbd {image.Spec}: cannot watch the image header ({VirtioSharp.Native.Errno.Describe(-result)}); a resize is noticed within {PollInterval.TotalSeconds:0} s by polling");
        _thread = new Thread(Run) { IsBackground = true, Name = "rbd resize watch" };
        _thread.Start();
    }

    /// <summary>Calls <paramref name="refresh"/> on the watch thread whenever the image header may have changed.</summary>
    public static RbdResizeWatch Start(RbdImage image, Action refresh, ILogSink? log) => new(image, refresh, log);

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
            _refresh();
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
