using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using VirtioSharp.Rbd.Native;

namespace VirtioSharp.Rbd;

/// <summary>
/// Lets one thread start a librbd operation and wait for its completion. Each thread that calls
/// the backend has one, made on its first call; the completion callback finds it through a GC
/// handle passed as the callback's argument, so nothing is allocated per request.
/// </summary>
internal sealed unsafe class RbdWaiter
{
    [ThreadStatic]
    private static RbdWaiter? t_current;

    private readonly ManualResetEventSlim _done = new(false, spinCount: 0);
    private readonly GCHandle _self;
    private nint _result;

    private RbdWaiter() => _self = GCHandle.Alloc(this, GCHandleType.Weak);

    ~RbdWaiter()
    {
        _self.Free();
        _done.Dispose();
    }

    public static RbdWaiter Current => t_current ??= new RbdWaiter();

    /// <summary>A completion whose callback wakes this waiter; 0 when librbd cannot make one.</summary>
    public nint NewCompletion()
    {
        _done.Reset();
        return RbdInterop.RbdAioCreateCompletion(GCHandle.ToIntPtr(_self), &OnComplete, out var completion) < 0 ? 0 : completion;
    }

    /// <summary>Waits for the operation started with <paramref name="completion"/>, releases it, and returns librbd's result.</summary>
    public nint Wait(nint completion)
    {
        _done.Wait();
        RbdInterop.RbdAioRelease(completion);
        return Volatile.Read(ref _result);
    }

    /// <summary>Drops a completion whose operation never started.</summary>
    public static void Abandon(nint completion) => RbdInterop.RbdAioRelease(completion);

    /// <summary>Runs on a librbd thread. Nothing in it may throw.</summary>
    [UnmanagedCallersOnly]
    private static void OnComplete(nint completion, nint arg)
    {
        if (GCHandle.FromIntPtr(arg).Target is RbdWaiter waiter)
        {
            Volatile.Write(ref waiter._result, RbdInterop.RbdAioGetReturnValue(completion));
            waiter._done.Set();
        }
    }
}
