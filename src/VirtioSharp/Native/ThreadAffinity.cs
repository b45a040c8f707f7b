using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

/// <summary>Pins the calling thread to one CPU (for measurements that need two threads on two cores).</summary>
public static class ThreadAffinity
{
    /// <summary>Pins the calling thread to <paramref name="cpu"/>; false with the errno text when the kernel refuses.</summary>
    public static unsafe bool TryPinCurrentThread(int cpu, out string? error)
    {
        error = null;
        if (cpu is < 0 or >= 1024)
        {
            error = $"CPU {cpu} is not in 0..1023";
            return false;
        }
        var mask = stackalloc ulong[16]; // a cpu_set_t of 1024 bits
        new Span<ulong>(mask, 16).Clear();
        mask[cpu / 64] = 1UL << (cpu % 64);
        if (Interop.SchedSetAffinity(0, 16 * sizeof(ulong), mask) == 0)
            return true;
        error = $"sched_setaffinity to CPU {cpu}: {Errno.Describe(Marshal.GetLastPInvokeError())}";
        return false;
    }
}
