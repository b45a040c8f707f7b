using System.Collections.Concurrent;
using System.Diagnostics;

namespace VirtioSharp.Tests.Support;

/// <summary>
/// Starts peer processes from one thread that lives as long as the test host.
/// <para>
/// Linux sends the parent-death signal (prctl PR_SET_PDEATHSIG) when the <em>thread</em> that
/// forked a child ends, not when the parent process does, and .NET forks on the thread that calls
/// <see cref="Process.Start()"/>. Debian's nbdkit 1.32 arms PR_SET_PDEATHSIG with SIGTERM at
/// start even without --exit-with-parent (strace shows the prctl before the plugin is loaded), so
/// an nbdkit started from a thread-pool thread shuts itself down cleanly (exit 0, "cleanup" in
/// its -v log) as soon as the pool retires that thread: a server that disappears mid-test for no
/// visible reason. Started from here, it lives until the test stops it or the host exits.
/// </para>
/// </summary>
internal static class ProcessLauncher
{
    private static readonly BlockingCollection<(ProcessStartInfo Info, TaskCompletionSource<Process> Started)> s_requests = new();

    static ProcessLauncher()
    {
        var thread = new Thread(Run) { IsBackground = true, Name = "process launcher" };
        thread.Start();
    }

    /// <summary>Starts <paramref name="info"/> on the launcher thread and returns the process.</summary>
    public static Process Start(ProcessStartInfo info)
    {
        var started = new TaskCompletionSource<Process>(TaskCreationOptions.RunContinuationsAsynchronously);
        s_requests.Add((info, started));
        return started.Task.GetAwaiter().GetResult();
    }

    private static void Run()
    {
        foreach (var (info, started) in s_requests.GetConsumingEnumerable())
        {
            try
            {
                started.SetResult(Process.Start(info) ?? throw new InvalidOperationException($"{info.FileName} did not start"));
            }
            catch (Exception e)
            {
                started.SetException(e);
            }
        }
    }
}
