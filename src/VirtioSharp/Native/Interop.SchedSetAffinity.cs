using System.Runtime.InteropServices;

namespace VirtioSharp.Native;

internal static partial class Interop
{
    /// <summary>sched_setaffinity(2); pid 0 is the calling thread.</summary>
    [LibraryImport(Libc, EntryPoint = "sched_setaffinity", SetLastError = true)]
    internal static unsafe partial int SchedSetAffinity(int pid, nuint cpuSetSize, ulong* mask);
}
