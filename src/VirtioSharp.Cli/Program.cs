using System.CommandLine;
using VirtioSharp.Cli.Commands;

var root = new RootCommand("vblk: virtio block devices in C#");
root.Add(IoCommand.Create());
root.Add(BenchCommand.Create());
return await root.Parse(args).InvokeAsync();
