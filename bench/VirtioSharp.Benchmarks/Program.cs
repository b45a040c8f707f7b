using BenchmarkDotNet.Running;
using VirtioSharp.Benchmarks;

// `ring ...`: the two-thread ring throughput run (RingThroughput); anything else goes to BenchmarkDotNet.
if (args.Length > 0 && args[0] == "ring")
    return RingThroughput.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
return 0;
