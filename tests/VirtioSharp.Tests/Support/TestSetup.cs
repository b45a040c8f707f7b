using System.Runtime.CompilerServices;

namespace VirtioSharp.Tests.Support;

internal static class TestSetup
{
    /// <summary>
    /// Machine tests block test threads while the driver's completions run on the thread pool;
    /// a larger minimum keeps a two-core CI runner from waiting on thread injection.
    /// </summary>
    [ModuleInitializer]
    internal static void Init() => ThreadPool.SetMinThreads(Math.Max(32, Environment.ProcessorCount * 4), 32);
}
